"""The harness judges with its own code: it never imports the actors' ebXML parser/serializer or metadata model.

Building requests may use xds_core's client pieces (SOAP client, MTOM writer, namespaces, vocabularies,
the hardened XML parser); everything that *judges* an answer (status, errors, contents, schema, KOS) is
the harness's own lxml/XPath code, its own XSD copy and the ``kos`` library.  So the allowed xds_core
modules are exactly those client pieces, for every module of the package, at any nesting level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import conformance

PACKAGE = Path(conformance.__file__).resolve().parent
#: xds_core modules the harness may import: transport and request building only.
ALLOWED_XDS_CORE = frozenset({"xds_core.ns", "xds_core.vocabulary", "xds_core.safe_xml", "xds_core.soap.client",
                              "xds_core.soap.mtom",
                              "xds_core.mllp"})  # the ITI-8 feed's transport: MLLP framing and client
ACTORS = ("xds_registry", "xds_repository", "imaging_source", "config")


def _imports(path: Path) -> list[str]:
    """Every module a file imports (``from xds_core import ns`` counts as ``xds_core.ns``), at any depth."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names if node.module == "xds_core"]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            found.append("<dynamic import>")
    return found


def _modules() -> dict[str, list[str]]:
    return {str(p.relative_to(PACKAGE.parent)): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_conformance_module_imports_the_ebxml_reader_or_the_metadata_model() -> None:
    offending = {name: [m for m in imports if m.startswith(("xds_core.ebxml", "xds_core.metadata"))]
                 for name, imports in _modules().items()}
    assert not {k: v for k, v in offending.items() if v}


def test_only_xds_core_client_pieces_no_actor_no_dynamic_import() -> None:
    modules = _modules()
    assert "conformance/expectations.py" in modules and "conformance/dicom_checks.py" in modules
    xds_core = {m for imports in modules.values() for m in imports
                if m.startswith("xds_core.") and m not in ("xds_core",)}
    assert xds_core <= ALLOWED_XDS_CORE, sorted(xds_core - ALLOWED_XDS_CORE)
    actors = {name: [m for m in imports if m.split(".")[0] in ACTORS] for name, imports in modules.items()}
    assert not {k: v for k, v in actors.items() if v}
    assert not [name for name, imports in modules.items() if "<dynamic import>" in imports]


def test_kos_objects_are_read_through_the_kos_library() -> None:
    imports = _modules()["conformance/dicom_checks.py"]
    assert {"kos.reader", "kos.validate"} <= set(imports)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself can fail: it finds nested, aliased and package-relative spellings."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from xds_core.ebxml.parse import parse_submission\n"
                      "import xds_core.metadata.objects as m\nfrom xds_core import errors\n"
                      "import importlib\nimportlib.import_module('xds_core.ebxml')\n")
    found = _imports(sample)
    assert "xds_core.ebxml.parse" in found and "xds_core.metadata.objects" in found
    assert "xds_core.errors" in found and "<dynamic import>" in found


def test_answers_are_schema_checked_with_the_runners_own_xsd_copy() -> None:
    from conformance import schema
    from conformance.manifest import Manifest
    from conformance.patients import PatientPool
    from conformance.runner import Config, Runner
    from conformance.xmlutil import parse

    assert schema.ROOT_SCHEMA.is_relative_to(PACKAGE) and schema.ROOT_SCHEMA.is_file()
    rs = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
    ok = parse(f'<rs:RegistryResponse xmlns:rs="{rs}" status="urn:oasis:names:tc:ebxml-regrep:'
               f'ResponseStatusType:Success"/>'.encode())
    assert schema.validate(ok) == []
    no_status = parse(f'<rs:RegistryResponse xmlns:rs="{rs}"><rs:Nonsense/></rs:RegistryResponse>'.encode())
    assert any("status" in f for f in schema.validate(no_status))
    runner = Runner(Manifest(PACKAGE, PACKAGE, {}, [], []), Config(endpoints={}, feed_configured=False),
                    PatientPool({}, None))
    assert runner._schema_problems(no_status)[0].startswith("response is not schema-valid")
