"""Job kinds of the tests, registered like an actor registers its own (the registry is process-wide)."""

from __future__ import annotations

import pytest

from jobs.models import Job
from jobs.registry import JobError, PermanentJobError, register

#: Payloads of the ``tests.record`` jobs that ran, in order.
RAN: list[dict] = []
#: A patient name as it could appear in a message; it must never reach Job.last_error or the log.
PATIENT_NAME = "DOE^JOHN"


def record(job: Job) -> None:
    RAN.append(job.payload)


def leak_patient_data(job: Job) -> None:
    raise ValueError(f"no study of patient {PATIENT_NAME} (id 4711) in the PACS")


def unreachable(job: Job) -> None:
    raise JobError("repository unreachable")


def refused(job: Job) -> None:
    raise PermanentJobError("payload without a study")


for kind, handler in {"tests.record": record, "tests.leak_patient_data": leak_patient_data,
                      "tests.unreachable": unreachable, "tests.refused": refused}.items():
    register(kind, handler)


@pytest.fixture
def ran() -> list[dict]:
    RAN.clear()
    return RAN
