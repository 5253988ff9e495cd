"""The serial pump drivers: one codec and driver per vendor (``ne1000``, ``alaris``,
``fresenius``), the driver contract, the serial line and the request/reply loop they
share (``pumplink``), the byte buffer their stream decoders split lines from
(``framing``) and what each vendor's alarm codes mean (``pump_alarms``). The polling
source that runs them is ``daemon.pump``; every frame and reply is described in
``docs/pump-protocols.md``."""
