"""The edge: what every request passes before and after its view, on both entrances (Flask's
hooks and the fast lane): its id, who calls (``auth``), the rate limit (``ratelimit``), the
refusal of a missing key, and the headers of the answer (``security``)."""
