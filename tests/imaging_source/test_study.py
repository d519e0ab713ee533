"""StudyRef: one attribute mapping whether built from instances or from query answers."""

from __future__ import annotations

from pydicom.dataset import Dataset

from imaging_source.study import StudyRef


def _identifier(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _issuer(entity_id: str) -> Dataset:
    return _identifier(LocalNamespaceEntityID=entity_id)


def test_query_levels_and_instances_give_the_same_study() -> None:
    study_attrs = dict(StudyInstanceUID="1.2.3", PatientID="P1", PatientName="Doe^Jane", PatientBirthDate="19700101",
                       PatientSex="F", StudyDate="20260101", StudyTime="101010", AccessionNumber="ACC1",
                       StudyID="S1", StudyDescription="CT head", ReferringPhysicianName="Ref^Doc")
    study = _identifier(**study_attrs, IssuerOfAccessionNumberSequence=[_issuer("HOSP")])
    series = _identifier(SeriesInstanceUID="1.2.3.4", Modality="CT", SeriesNumber="2", BodyPartExamined="HEAD")
    images = [_identifier(SOPClassUID="1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID=f"1.2.3.4.{n}",
                          InstanceNumber=str(n)) for n in (3, 1, 2)]
    from_query = StudyRef.from_query_levels(study, [(series, images)])

    instances = []
    for image in images:
        ds = _identifier(**study_attrs, IssuerOfAccessionNumberSequence=[_issuer("HOSP")],
                         SeriesInstanceUID="1.2.3.4", Modality="CT", SeriesNumber="2", BodyPartExamined="HEAD")
        ds.update(image)
        instances.append(ds)
    from_instances = StudyRef.from_datasets(instances)

    assert from_query == from_instances
    assert from_query.issuer_of_accession_number == "HOSP"
    assert [i.instance_number for i in from_query.series[0].instances] == [1, 2, 3]
