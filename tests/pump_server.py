"""A pump server as the tests play it: IHE PCD-01 ``ORU^R01`` messages with infusion data
(domain.md section 5), built with hl7apy (an HL7 library independent of python-hl7, which
the daemon parses with) and sent over MLLP; the acknowledgement read back with hl7apy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import hl7.mllp
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
DEVICE = "0012345678ABCDEF"  # an EUI-64

# OBX-3 and OBX-6 of the pump rows of domain.md section 5.
PROGRAMMED = "157784^MDC_FLOW_FLUID_PUMP^MDC"
CURRENT = "158014^MDC_FLOW_FLUID_PUMP_CURRENT^MDC"
VOLUME = "157993^MDC_VOL_FLUID_DELIV_TOTAL^MDC"
TO_BE_INFUSED = "157884^MDC_VOL_FLUID_TBI^MDC"
ML_PER_H = "265266^MDC_DIM_MILLI_L_PER_HR^MDC"
ML = "263762^MDC_DIM_MILLI_L^MDC"


def hl7_time(when: datetime) -> str:
    """An HL7 DTM with its UTC offset."""
    return when.strftime("%Y%m%d%H%M%S%z")


@dataclass(frozen=True, slots=True)
class Row:
    """One numeric OBX of the pump's channel: OBX-3, -5, -6, and optionally -14 and -18."""

    code: str
    value: str
    unit: str
    time: str = ""
    device: str = ""
    value_type: str = "NM"


def rows(
    *,
    current: float | None = None,
    programmed: float | None = None,
    volume: float | None = None,
    time: str = "",
) -> list[Row]:
    """The usual rows of one pump: rates in mL/h, volume infused in mL."""
    out: list[Row] = []
    if programmed is not None:
        out.append(Row(PROGRAMMED, f"{programmed:.10g}", ML_PER_H, time))
    if current is not None:
        out.append(Row(CURRENT, f"{current:.10g}", ML_PER_H, time))
    if volume is not None:
        out.append(Row(VOLUME, f"{volume:.10g}", ML, time))
    return out


def pump_message(
    *channel: Row,
    control_id: str = "P1",
    observed: str = "20260302120000+0000",
    device: str | None = DEVICE,
    location: str | None = None,
    patient: str | None = None,
    kind: str = "ORU^R01^ORU_R01",
    mds: int = 1,
) -> str:
    """An ORU^R01 as DEC structures it: MSH, PID and PV1 (when given), OBR (OBR-7 the
    observation time), the pump's MDS row with ``device`` in OBX-18, its VMD and channel
    rows (OBX-11 X), then ``channel``'s metric rows under ``<mds>.1.1.<n>``."""
    message = Message("ORU_R01", version="2.6", validation_level=VALIDATION_LEVEL.TOLERANT)
    message.msh.msh_3 = "PUMPSRV^0012345678ABCDE0^EUI-64"
    message.msh.msh_7 = observed
    message.msh.msh_9 = kind
    message.msh.msh_10 = control_id
    message.msh.msh_11 = "P"
    message.msh.msh_15 = "AL"
    message.msh.msh_16 = "NE"
    message.msh.msh_21 = PROFILE
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    if patient is not None or location is not None:
        person = result.add_group("ORU_R01_PATIENT")
        person.pid.pid_3 = f"{patient or ''}^^^H^MR"
        visit = person.add_group("ORU_R01_VISIT")
        visit.pv1.pv1_2 = "I"
        visit.pv1.pv1_3 = location or ""
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    order.obr.obr_4 = "69985^^MDC"
    order.obr.obr_7 = observed
    structure = [
        ("69985^^MDC", f"{mds}.0.0.0", f"{device}^^{device}^EUI-64" if device else ""),
        ("69986^^MDC", f"{mds}.1.0.0", ""),
        ("126978^^MDC", f"{mds}.1.1.0", ""),
    ]
    n = 0
    for code, path, equipment in structure:
        n += 1
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(n)
        obx.obx_3 = code
        obx.obx_4 = path
        obx.obx_11 = "X"
        if equipment:
            obx.obx_18 = equipment
    for k, row in enumerate(channel, start=1):
        n += 1
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(n)
        obx.obx_2 = row.value_type
        obx.obx_3 = row.code
        obx.obx_4 = f"{mds}.1.1.{k}"
        obx.obx_5 = row.value
        if row.unit:
            obx.obx_6 = row.unit
        obx.obx_11 = "R"
        if row.time:
            obx.obx_14 = row.time
        obx.obx_17 = "AMEAS"
        if row.device:
            obx.obx_18 = row.device
    return str(message.to_er7())


@dataclass(frozen=True, slots=True)
class Answer:
    """An acknowledgement: MSA-1, MSA-2, and ERR-3's reason (``""`` without ERR)."""

    code: str
    control_id: str
    reason: str


def answer(ack: bytes) -> Answer:
    """An acknowledgement as hl7apy reads it."""
    parsed = parse_message(ack.decode(), find_groups=False)
    reason = ""
    if parsed.children.get("ERR"):
        reason = str(parsed.err.err_3.value).split("^")[1]
    return Answer(str(parsed.msa.msa_1.value), str(parsed.msa.msa_2.value), reason)


async def send(port: int, *messages: str, host: str = "127.0.0.1") -> list[Answer]:
    """Each message over one MLLP connection, waiting for its acknowledgement before the next."""
    reader, writer = await hl7.mllp.open_hl7_connection(host, port)
    answers: list[Answer] = []
    try:
        for text in messages:
            writer.writeblock(text.encode())
            await writer.drain()
            answers.append(answer(await asyncio.wait_for(reader.readblock(), 10)))
    finally:
        writer.close()
    return answers
