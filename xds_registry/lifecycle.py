"""What a registration does to the objects already in the registry (ITI TF-3 4.2.2, 4.2.3.4.4).

Called by :func:`xds_registry.register_document_set.register_document_set` inside its transaction,
after the registry-level rules passed:

* a replacement (RPLC, XFRM_RPLC) deprecates the replaced DocumentEntry and, recursively, its
  APND/XFRM descendants (ITI TF-3 4.2.2.2.3) -- column and stored fragment;
* the replacement joins every Folder the replaced entry belonged to: new HasMember associations
  (ITI TF-3 4.2.2.2.3);
* a Folder that gains a member gets a new lastUpdateTime (ITI TF-3 4.2.3.4.4).
"""

from __future__ import annotations

from xds_core.metadata.objects import Association, new_id
from xds_core.vocabulary import AssociationType, AvailabilityStatus, ObjectType
from xds_registry import models as m
from xds_registry.stored_xml import set_last_update_time_in_xml, status_replaced_in_xml

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value


def deprecate(targets: set[str]) -> set[str]:
    """Deprecate replaced entries and, recursively, their APND/XFRM descendants (ITI TF-3 4.2.2.2.3)."""
    if not targets:
        return set()
    all_deprecated = set(targets)
    frontier = set(targets)
    while frontier:
        children = set(m.Association.objects.filter(
            target_uuid__in=frontier,
            association_type__in=[AssociationType.APND.value, AssociationType.XFRM.value],
        ).values_list("source_uuid", flat=True))
        frontier = children - all_deprecated
        all_deprecated |= frontier
    approved = list(m.DocumentEntry.objects.filter(entry_uuid__in=all_deprecated, status=APPROVED)
                    .values_list("entry_uuid", flat=True))
    m.DocumentEntry.objects.filter(entry_uuid__in=approved).update(
        status=DEPRECATED, xml=status_replaced_in_xml(APPROVED, DEPRECATED))
    return set(approved)


def propagate_folders(replaced: dict[str, str], patient_id: str) -> list[Association]:
    """The replacement joins every Folder the replaced entry belonged to (ITI TF-3 4.2.2.2.3)."""
    if not replaced:
        return []
    memberships = m.Association.objects.filter(
        target_uuid__in=list(replaced), association_type=AssociationType.HasMember.value,
        source_kind=m.ObjectKind.FOLDER, status=APPROVED).values_list("source_uuid", "target_uuid")
    out: list[Association] = []
    seen: set[tuple[str, str]] = set()
    for folder_uuid, old in memberships:
        key = (folder_uuid, replaced[old])
        if key in seen:
            continue
        seen.add(key)
        a = Association(id=new_id(), association_type=AssociationType.HasMember.value,
                        source_object=folder_uuid, target_object=replaced[old],
                        object_type=ObjectType.ASSOCIATION.value)
        a.status, a.lid, a.version_name = APPROVED, a.id, "1"
        out.append(a)
    return out


def touch_folders(folder_uuids: set[str], timestamp: str) -> None:
    # A Folder's lastUpdateTime changes whenever a member is added (ITI TF-3 4.2.3.4.4).
    if not folder_uuids:
        return
    rows = list(m.Folder.objects.select_for_update().filter(entry_uuid__in=folder_uuids).only("id", "xml"))
    for row in rows:
        row.xml = set_last_update_time_in_xml(row.xml, timestamp)
        row.last_update_time = timestamp
    m.Folder.objects.bulk_update(rows, ["xml", "last_update_time"])
