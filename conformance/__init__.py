"""Connectathon-style conformance runner (``manage.py xds_conformance``).

Replays the NIST-derived manifest (``conformance/corpus``) against any vendor's
registry, repository and imaging document source over IHE transactions only:
``manifest`` (loading), ``transforms`` (placeholders, id allocation, ebRIM 2.1->3.0),
``patients`` (pool + ITI-8 feed), ``codes`` (``--codes``: the corpus' codes rewritten for the
affinity domain's codes.xml, as the NIST CodesUpdater does), ``transport`` (SOAP/MTOM), ``expectations`` and
``dicom_checks`` (judging), ``runner`` (the loop), ``report`` (console + JUnit).
"""
