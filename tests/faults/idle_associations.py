"""Hold idle DICOM associations from another process: ``python -m tests.faults.idle_associations``.

``HOST PORT CALLED_AE CALLING_AE COUNT``: opens ``COUNT`` associations (A-ASSOCIATE, PS3.8 §7.1, asking for
Verification only) and sends nothing on them.  It prints ``held=N refused=M`` once they are opened, then answers
each ``count`` line on stdin with ``held=N`` (how many the listener still keeps), and aborts them all on
``close`` or end of input.

A separate process because a pynetdicom association is a thread that polls every millisecond: twenty of them
inside the test process would slow the very client whose latency the test measures, which a real flood
(other hosts) does not do.  Their cost on the *listener's* side is part of what the test measures.
"""

from __future__ import annotations

import sys

from imaging_source.dicom.ae import AssociationError, associate, make_ae
from imaging_source.dicom.config import Peer

#: Verification SOP Class (PS3.4 Annex A): the cheapest context an idle association can ask for.
VERIFICATION = "1.2.840.10008.1.1"


def main(argv: list[str]) -> int:
    host, port, called, calling, count = argv
    # Our side must not be the one to give up: no network timeout shorter than any test window.
    ae = make_ae(calling, timeouts={"connection": 10, "acse": 10, "dimse": 10, "network": 600})
    ae.add_requested_context(VERIFICATION)
    held, refused = [], 0
    for _ in range(int(count)):
        try:
            held.append(associate(ae, Peer(called, host, int(port))))
        except AssociationError:
            refused += 1
    print(f"held={len(held)} refused={refused}", flush=True)
    for line in sys.stdin:
        if line.strip() != "count":
            break
        print(f"held={sum(1 for assoc in held if assoc.is_established)}", flush=True)
    for assoc in held:
        if assoc.is_established:
            assoc.abort()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
