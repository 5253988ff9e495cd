"""Alerts to people: who is told and when (``routing``), how (``receivers``), and the
durable queue between the two (``service``). See README, "Routing and delivery"."""
