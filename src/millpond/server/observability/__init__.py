"""What an operator watches: Prometheus metrics at ``/metrics`` (``metrics``, ``router``)."""
