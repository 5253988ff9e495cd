"""Clinical rule families: pure functions of (state, event, now) that suggest alert conditions.

``protocols`` (the dose schedules), ``dose`` and ``dose_label`` (the dose ledger and the
label's rules on interruptions), ``vitals`` (fever, hypotension, hypoxia and the other
physiological limits), ``news2``, ``crs`` (CRS and ICANS grades, the neurological check),
``chart`` (the nurses' entries they read), ``observations`` (the validation of those
entries) and ``watch`` (the vital-sign family of one bed, put together).
"""
