"""HL7 v2 in: monitor observations (``hl7in``, IHE PCD-01), pump servers' readings
(``hl7pump``) and admissions (``adt``), each parsed with python-hl7 and answered with an
accept acknowledgement by the MLLP listener (``daemon.links.mllp``)."""
