"""A C-STORE peer in a process of its own, so that a test measures the listener's memory alone.

``python -m tests.imaging_source.dicom.store_peer HOST PORT CALLED_AE FILE [--move-originator AET]``
sends ``FILE`` (Part 10) as written - pynetdicom's ``STORE_SEND_CHUNKED_DATASET``: the Affected SOP
Instance UID comes from its File Meta, the data set bytes go out untouched - and prints the DIMSE
status as ``status=0x0000`` (``status=none`` when the association was aborted, ``status=refused`` when
it could not be established).  dcmtk's storescu cannot send a Move Originator AE Title, hence this.
"""

from __future__ import annotations

import argparse
import warnings

from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, _config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("called")
    parser.add_argument("file")
    parser.add_argument("--move-originator", default="")
    parser.add_argument("--calling", default="PEER")
    args = parser.parse_args()
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=args.calling)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    assoc = ae.associate(args.host, args.port, ae_title=args.called)
    if not assoc.is_established:
        print("status=refused", flush=True)
        return
    kwargs = {"originator_aet": args.move_originator, "originator_id": 1} if args.move_originator else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rsp = assoc.send_c_store(args.file, **kwargs)
    print(f"status=0x{int(rsp.Status):04X}" if rsp and "Status" in rsp else "status=none", flush=True)
    if assoc.is_established:
        assoc.release()


if __name__ == "__main__":
    main()
