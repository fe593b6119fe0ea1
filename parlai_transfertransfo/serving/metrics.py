"""`/metrics`: what the server does, in Prometheus' text format (prometheus-client).

    transfertransfo_http_requests_total{route,method,status}   every answer, by status
    transfertransfo_generations_total{outcome}       requests that left the scheduler:
                                                     completed, cancelled (client gone), failed
    transfertransfo_prompt_tokens_total, transfertransfo_generation_tokens_total
    transfertransfo_time_to_first_token_seconds      histogram, submission to first token
    transfertransfo_request_latency_seconds          histogram, submission to last token
    transfertransfo_decode_steps_total, transfertransfo_batch_row_steps_total
                                                     their ratio: mean rows a model call
    transfertransfo_batch_rows, _running_requests, _queued_requests, _page_sessions
                                                     gauges, read at scrape time

The registry is the app's own (not prometheus-client's global one): two apps in one
process count apart. A scrape reads the scheduler's counters without waiting for it.
"""
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from parlai_transfertransfo.serving.job import OUTCOMES

PREFIX = "transfertransfo_"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)


class _Live:
    """Counters and gauges read from the scheduler and the sessions at each scrape."""

    def __init__(self, scheduler, sessions):
        self.scheduler, self.sessions = scheduler, sessions

    def collect(self):
        s = self.scheduler.health()
        outcomes = CounterMetricFamily(PREFIX + "generations", "requests that left the scheduler, by outcome",
                                       labels=["outcome"])
        for outcome in OUTCOMES:
            outcomes.add_metric([outcome], s[outcome])
        yield outcomes
        for name, key, doc in [
            ("prompt_tokens", "prompt_tokens", "context tokens read (with the reply's <speaker1>)"),
            ("generation_tokens", "generated_tokens", "reply tokens generated"),
            ("decode_steps", "steps", "decoding steps (one model call each)"),
            ("batch_row_steps", "row_steps", "batch rows summed over decoding steps"),
        ]:
            yield CounterMetricFamily(PREFIX + name, doc, value=s[key])
        for name, value, doc in [
            ("batch_rows", s["batch_rows"], "rows decoding now"),
            ("max_batch_rows", self.scheduler.max_rows, "--max-batch-rows"),
            ("running_requests", s["running_requests"], "requests decoding now"),
            ("queued_requests", s["queued_requests"], "requests waiting for room in the batch"),
            ("page_sessions", len(self.sessions), "live chat-page sessions"),
        ]:
            yield GaugeMetricFamily(PREFIX + name, doc, value=value)


class Metrics:
    def __init__(self, scheduler, sessions):
        self.registry = CollectorRegistry()
        self.http = Counter(PREFIX + "http_requests", "HTTP requests answered", ["route", "method", "status"],
                            registry=self.registry)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "submission to the first generated token",
                              buckets=TTFT_BUCKETS, registry=self.registry)
        self.latency = Histogram(PREFIX + "request_latency_seconds", "submission to the last token (completed)",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_Live(scheduler, sessions))
        scheduler.on_end = self.job_ended

    def job_ended(self, job):
        """Called by the scheduler's thread as each job leaves it."""
        if job.first_token is not None:
            self.ttft.observe(job.first_token - job.submitted)
        if job.outcome == "completed":
            self.latency.observe(job.finished - job.submitted)

    def exposition(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class CountRequests:
    """ASGI middleware: every HTTP answer counted by route (the route's template, so that
    ids never become labels), method and status; 500 for an exception."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def recording_send(event):
            if event["type"] == "http.response.start":
                status[0] = event["status"]
            await send(event)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = "/static" if scope["path"].startswith("/static/") else "other"
            self.metrics.http.labels(route, scope["method"], str(status[0])).inc()
