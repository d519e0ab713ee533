"""Affinity-domain code rewrite of the conformance corpus (``--codes``), after the NIST toolkit's CodesUpdater.

The testkit's metadata and queries use codes of the NIST Connectathon (``225728007``,
``Practice-C`` ...) that a registry validating against its affinity domain's ``codes.xml``
rejects (XDSRegistryMetadataError, ITI TF-3 4.2.3.1.7 "codes from the affinity domain's value
sets").  The toolkit's answer (``gov.nist.toolkit.testengine.scripts.CodesUpdater``,
usnistgov/iheos-toolkit2) is to rewrite its copy of the testkit for the environment's
``codes.xml``; this module does the same, on the requests as they are sent:

* **metadata**: every ``Classification`` whose ``classificationScheme`` is a coded attribute of
  ``codes.xml`` (a ``CodeType`` with that ``classScheme``) and whose (``nodeRepresentation``,
  first ``codingScheme`` Value) is not in that value set gets a replacement: ``nodeRepresentation``,
  the codingScheme Value and ``Name/LocalizedString/@value`` (display) are overwritten;
* **queries**: every coded parameter value ``'code^^scheme'`` of the parameters in
  :data:`QUERY_CODE_PARAMETERS` (OR lists and AND groups alike) outside the value set is replaced
  through the same map; a query whose folder has an ``errors.properties`` naming
  ``not_in_CE_format`` is left alone (its malformed codes are the point of the test);
* the map is keyed by the old (attribute, code, scheme), so the same old code always becomes the
  same new code - a query keeps finding what the submission registered.

Choice of the replacement (the toolkit's ``AllCodes.pick`` is a round robin in file order): per
attribute, the value set's codes in file order, those not marked ``deprecated="yes"`` first
(the NIST file marks nearly every entry deprecated and its registry accepts them regardless, see
affinity-domain/README.md), skipping codes the corpus itself already uses conformingly
(:meth:`CodeRewriter.plan` reserves them), so that every distinct old code gets a distinct new
code - queries that tell two codes apart, or that must not match another test's data, keep doing
so - while the list lasts, then wrapping around.  :meth:`CodeRewriter.plan` assigns the codes of a
whole manifest in its order before the run, so the mapping depends only on the manifest and the
``codes.xml``, not on the cases selected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from conformance.xmlutil import XmlError, children, descendants, local, parse, text_of
from xds_core.vocabulary import ClassificationScheme

#: Coded stored-query parameters -> the classification scheme of their attribute (ITI TF-2a 3.18.4.1.2.3.7).
#: Spelled out here, not taken from the registry: the harness judges any vendor with its own knowledge.
QUERY_CODE_PARAMETERS: dict[str, str] = {
    "$XDSDocumentEntryClassCode": ClassificationScheme.DocumentEntry_classCode.value,
    "$XDSDocumentEntryTypeCode": ClassificationScheme.DocumentEntry_typeCode.value,
    "$XDSDocumentEntryPracticeSettingCode": ClassificationScheme.DocumentEntry_practiceSettingCode.value,
    "$XDSDocumentEntryHealthcareFacilityTypeCode": ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode.value,
    "$XDSDocumentEntryFormatCode": ClassificationScheme.DocumentEntry_formatCode.value,
    "$XDSDocumentEntryEventCodeList": ClassificationScheme.DocumentEntry_eventCodeList.value,
    "$XDSDocumentEntryConfidentialityCode": ClassificationScheme.DocumentEntry_confidentialityCode.value,
    "$XDSSubmissionSetContentType": ClassificationScheme.SubmissionSet_contentTypeCode.value,
    "$XDSFolderCodeList": ClassificationScheme.Folder_codeList.value,
}

#: Marker of the toolkit's query tests whose codes are deliberately malformed (CodesUpdater).
NOT_IN_CE_FORMAT = "not_in_CE_format"

# A quoted stored-query string; a quote inside is doubled (ITI TF-2a 3.18.4.1.2.3.5).
_QUOTED = re.compile(r"'((?:[^']|'')*)'")
_NODE_REPRESENTATION = re.compile(r"""@nodeRepresentation\s*=\s*(["'])([^"']*)\1""")
_CLASSIFICATION_SCHEME = re.compile(r"""@classificationScheme\s*=\s*(["'])([^"']*)\1""")


class CodesFileError(ValueError):
    """The ``--codes`` file is missing or is not a codes.xml."""


@dataclass(frozen=True)
class ValueSetCode:
    """One ``Code`` of a codes.xml ``CodeType``; ``deprecated="yes"`` is the toolkit's annotation."""

    code: str
    scheme: str
    display: str = ""
    deprecated: bool = False

    def __str__(self) -> str:
        return f"{self.code}^^{self.scheme}"


@dataclass(frozen=True)
class CodeType:
    """One ``CodeType`` of codes.xml that has a ``classScheme`` (the toolkit's ``Codes``)."""

    name: str
    class_scheme: str
    codes: tuple[ValueSetCode, ...]

    def contains(self, code: str, scheme: str) -> bool:
        return any(c.code == code and c.scheme == scheme for c in self.codes)


@dataclass(frozen=True)
class AffinityCodes:
    """codes.xml as the toolkit's ``AllCodes`` sees it: value sets by classification scheme."""

    source: str
    by_scheme: dict[str, CodeType]

    def code_type(self, class_scheme: str) -> CodeType | None:
        """The value set of a coded attribute; None when codes.xml does not constrain it."""
        code_type = self.by_scheme.get(class_scheme)
        return code_type if code_type is not None and code_type.codes else None


def parse_codes(data: bytes, source: str = "<bytes>") -> AffinityCodes:
    """A codes.xml (format: conformance/affinity-domain/README.md) as value sets by classification scheme.

    The runner's own reader (the registry has its own: the harness shares no code with what it
    judges).  CodeTypes without a ``classScheme`` (mimeType) are not classifications and never
    rewritten; a code listed twice counts once (its first listing).
    """
    try:
        root = parse(data)
    except XmlError as exc:
        raise CodesFileError(f"{source}: not well-formed XML: {exc}") from exc
    if local(root) != "Codes":
        raise CodesFileError(f"{source}: root element must be <Codes>, found <{local(root)}>")
    by_scheme: dict[str, CodeType] = {}
    for code_type in children(root, "CodeType"):
        name = code_type.get("name", "")
        if not name:
            raise CodesFileError(f"{source}: CodeType without a name (line {code_type.sourceline})")
        class_scheme = code_type.get("classScheme", "")
        if not class_scheme:
            continue
        entries: dict[tuple[str, str], ValueSetCode] = {}
        for code in children(code_type, "Code"):
            if code.get("code"):
                entry = ValueSetCode(code.get("code", ""), code.get("codingScheme", ""), code.get("display", ""),
                                     code.get("deprecated", "").lower() == "yes")
                entries.setdefault((entry.code, entry.scheme), entry)  # first listing wins
        previous = by_scheme.get(class_scheme)
        codes = (previous.codes if previous else ()) + tuple(e for e in entries.values()
                                                              if not previous or e not in previous.codes)
        by_scheme[class_scheme] = CodeType(name, class_scheme, codes)
    return AffinityCodes(source=source, by_scheme=by_scheme)


def load_codes(path: str | Path) -> AffinityCodes:
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CodesFileError(f"{path}: {exc.strerror or exc}") from exc
    return parse_codes(data, source=str(file))


@dataclass(frozen=True)
class Mapping:
    attribute: str
    old: tuple[str, str]
    new: ValueSetCode

    def __str__(self) -> str:
        return f"{self.attribute}: {self.old[0]}^^{self.old[1]} -> {self.new}"


@dataclass
class _Picker:
    """Round robin over one value set in its order, codes reserved for their own use left out while
    others remain: each pick is a code not handed out before, until none is left, then wrap around."""

    order: list[ValueSetCode]
    reserved: set[tuple[str, str]] = field(default_factory=set)
    picks: int = 0

    def pick(self) -> ValueSetCode:
        candidates = [c for c in self.order if (c.code, c.scheme) not in self.reserved] or self.order
        candidate = candidates[self.picks % len(candidates)]
        self.picks += 1
        return candidate


def is_skipped_query(path: Path) -> bool:
    """True for a query file whose folder's errors.properties holds ``not_in_CE_format`` (CodesUpdater)."""
    errors = path.parent / "errors.properties"
    try:
        return NOT_IN_CE_FORMAT in errors.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


class CodeRewriter:
    """The run's code map and the rewrites of metadata, queries and assertions through it."""

    def __init__(self, codes: AffinityCodes) -> None:
        self.codes = codes
        self.mapping: dict[tuple[str, str, str], ValueSetCode] = {}
        self.used: dict[tuple[str, str, str], None] = {}  # keys applied to a request, in order
        self._pickers: dict[str, _Picker] = {}
        for class_scheme, code_type in codes.by_scheme.items():
            if code_type.codes:
                preferred = [c for c in code_type.codes if not c.deprecated]
                self._pickers[class_scheme] = _Picker(preferred + [c for c in code_type.codes if c.deprecated])

    # --- the map -------------------------------------------------------------------------

    def conforms(self, class_scheme: str, code: str, scheme: str) -> bool | None:
        """None when codes.xml does not constrain the attribute, else whether the code is in its value set."""
        code_type = self.codes.code_type(class_scheme)
        return None if code_type is None else code_type.contains(code, scheme)

    def reserve(self, class_scheme: str, code: str, scheme: str) -> None:
        """A conforming code the corpus uses as is: not handed out while other codes remain."""
        picker = self._pickers.get(class_scheme)
        if picker is not None:
            picker.reserved.add((code, scheme))

    def replacement(self, class_scheme: str, code: str, scheme: str) -> ValueSetCode | None:
        """The conforming code for (code, scheme) of an attribute; None when it needs none."""
        if self.conforms(class_scheme, code, scheme) is not False:
            return None
        key = (class_scheme, code, scheme)
        if key not in self.mapping:
            self.mapping[key] = self._pickers[class_scheme].pick()
        return self.mapping[key]

    def note(self, class_scheme: str, code: str, scheme: str) -> None:
        """See a code in the corpus: reserve it when it conforms, map it when it does not."""
        if "$" in code or "$" in scheme:
            return  # a placeholder: mapped when the request is built
        verdict = self.conforms(class_scheme, code, scheme)
        if verdict:
            self.reserve(class_scheme, code, scheme)
        elif verdict is False:
            self.replacement(class_scheme, code, scheme)

    def plan(self, files: Iterable[tuple[Path, str]]) -> list[str]:
        """Read every (file, kind) of a manifest - kind ``metadata`` or ``query`` - in order: first
        reserve every conforming code, then map every non-conforming one.  Returns unreadable files."""
        problems: list[str] = []
        found: list[tuple[str, str, str]] = []
        for path, kind in files:
            if kind == "query" and is_skipped_query(path):
                continue
            try:
                root = parse(path.read_bytes())
            except (OSError, XmlError) as exc:
                problems.append(f"{path}: {exc}")
                continue
            if kind == "metadata":
                found += [(cs, code, scheme) for _cl, cs, code, scheme in _coded_classifications(root)]
            else:
                found += [(cs, code, scheme) for _v, cs, _m, code, scheme in _coded_query_values(root)]
        for cs, code, scheme in found:
            if self.conforms(cs, code, scheme) and "$" not in code + scheme:
                self.reserve(cs, code, scheme)
        for cs, code, scheme in found:
            self.note(cs, code, scheme)
        return problems

    def _apply(self, class_scheme: str, code: str, scheme: str) -> ValueSetCode | None:
        new = self.replacement(class_scheme, code, scheme)
        if new is not None:
            self.used.setdefault((class_scheme, code, scheme))
        return new

    # --- rewrites --------------------------------------------------------------------------

    def rewrite_metadata(self, root: etree._Element, *, keep: Iterable[str] = ()) -> list[Mapping]:
        """Replace every non-conforming coded Classification in a submission (in place);
        Classifications of the schemes in ``keep`` stay as they are."""
        kept = set(keep)
        done: list[Mapping] = []
        for classification, class_scheme, code, scheme in _coded_classifications(root):
            if class_scheme in kept:
                continue
            new = self._apply(class_scheme, code, scheme)
            if new is None:
                continue
            classification.set("nodeRepresentation", new.code)
            value = _coding_scheme_value(classification)
            if value is not None:
                value.text = new.scheme
            name = next(iter(children(classification, "Name")), None)
            string = next(iter(children(name, "LocalizedString")), None) if name is not None else None
            if string is not None:
                string.set("value", new.display or new.code)
            done.append(self._mapping(class_scheme, code, scheme, new))
        return done

    def rewrite_query(self, root: etree._Element) -> list[Mapping]:
        """Replace every non-conforming ``'code^^scheme'`` of the coded parameters (in place)."""
        found = list(_coded_query_values(root))
        # Map in document order (a lazily picked code follows the text), edit from the end of each
        # Value backwards so the offsets of earlier matches in the same text stay valid.
        replacements = [(item, self._apply(item[1], item[3], item[4])) for item in found]
        for (value, _cs, match, _code, _scheme), new in reversed(replacements):
            if new is not None:
                quoted = "'" + f"{new.code}^^{new.scheme}".replace("'", "''") + "'"
                text = value.text or ""
                value.text = text[:match.start()] + quoted + text[match.end():]
        return [self._mapping(cs, code, scheme, new)
                for (_v, cs, _m, code, scheme), new in replacements if new is not None]

    def rewrite_assertion(self, expression: str) -> str:
        """An assertion XPath naming a code literally (``@nodeRepresentation="X"``, 12370) follows the
        map when X was replaced under one new code (for the ``@classificationScheme`` it names, if any)."""
        named_schemes = {m.group(2) for m in _CLASSIFICATION_SCHEME.finditer(expression)}

        def follow(match: re.Match[str]) -> str:
            old = match.group(2)
            new_codes = {new.code for (cs, code, _scheme), new in self.mapping.items()
                         if code == old and (not named_schemes or cs in named_schemes)}
            if len(new_codes) != 1:
                return match.group(0)
            quote = match.group(1)
            return f"@nodeRepresentation={quote}{new_codes.pop()}{quote}"

        return _NODE_REPRESENTATION.sub(follow, expression)

    def _mapping(self, class_scheme: str, code: str, scheme: str, new: ValueSetCode) -> Mapping:
        code_type = self.codes.by_scheme[class_scheme]
        return Mapping(code_type.name or class_scheme, (code, scheme), new)

    def report(self, *, used_only: bool = True) -> list[str]:
        """One ``attribute: old -> new`` line per mapping (those applied to a request, by default)."""
        keys = list(self.used) if used_only else list(self.mapping)
        return [str(self._mapping(cs, code, scheme, self.mapping[(cs, code, scheme)]))
                for cs, code, scheme in keys]


def _coding_scheme_value(classification: etree._Element) -> etree._Element | None:
    for slot in children(classification, "Slot"):
        if slot.get("name") == "codingScheme":
            return next(descendants(slot, "Value"), None)
    return None


def _coded_classifications(root: etree._Element) -> list[tuple[etree._Element, str, str, str]]:
    """(Classification, classificationScheme, code, codingScheme) of every coded Classification.

    A Classification without a codingScheme Slot is left to the registry's validation (the test may
    be about exactly that), so it is not listed.
    """
    out: list[tuple[etree._Element, str, str, str]] = []
    for classification in descendants(root, "Classification"):
        class_scheme = classification.get("classificationScheme")
        value = _coding_scheme_value(classification)
        if not class_scheme or value is None:
            continue
        out.append((classification, class_scheme, classification.get("nodeRepresentation", ""), text_of(value)))
    return out


def _coded_query_values(root: etree._Element) -> Iterable[tuple[etree._Element, str, re.Match[str], str, str]]:
    """(Value element, classification scheme, match of the quoted string, code, scheme) of every
    well-formed ``'code^^scheme'`` of a coded parameter, in document order."""
    for query in descendants(root, "AdhocQuery"):
        for slot in children(query, "Slot"):
            class_scheme = QUERY_CODE_PARAMETERS.get(slot.get("name", ""))
            if class_scheme is None:
                continue
            for value in descendants(slot, "Value"):
                for match in _QUOTED.finditer(value.text or ""):
                    term = match.group(1).replace("''", "'")
                    code, sep, scheme = term.partition("^^")
                    if sep and code and scheme and "^" not in code:
                        yield value, class_scheme, match, code, scheme


__all__ = [
    "AffinityCodes", "CodeRewriter", "CodeType", "CodesFileError", "Mapping", "QUERY_CODE_PARAMETERS",
    "ValueSetCode", "is_skipped_query", "load_codes", "parse_codes",
]
