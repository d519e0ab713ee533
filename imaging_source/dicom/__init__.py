"""The Imaging Document Source's DICOM side: the only package that imports pynetdicom.

- :mod:`.ae`        AE factory (TCP_NODELAY on every socket), association pool
- :mod:`.config`    :class:`~.config.DicomConfig` (built from settings by the view/command layer)
- :mod:`.find`      C-FIND study/series/image levels, or QIDO-RS -> :class:`imaging_source.study.StudyRef`
- :mod:`.fetch`     C-GET, C-MOVE to our SCP, or WADO-RS, one request per series, streaming
- :mod:`.transcode` deliver in a requested transfer syntax (pydicom codecs)
- :mod:`.scp`       C-STORE + MPPS + C-ECHO listener
- :mod:`.received`  a received C-STORE data set, decoded with a bound on deflate inflation
- :mod:`.status`    domain exception -> DIMSE status (PS3.4 / PS3.7)
"""
