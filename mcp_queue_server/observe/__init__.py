"""What operators see: Prometheus metrics, the /status page, and the HTTP checks they share."""
