// OpenTelemetry for the console, as one global (`DelineateOtel`): a tracer provider that
// exports to `{endpoint}/v1/traces` (OTLP/HTTP, JSON), W3C trace context on every fetch
// to the page's own origin, and a tracer for the user actions.
import { context, propagation, trace, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { FetchInstrumentation } from "@opentelemetry/instrumentation-fetch";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, StackContextManager, TracerProvider } from "@opentelemetry/sdk-trace";

/**
 * Start tracing; returns what the page needs to make action spans and run calls in them.
 * @param {{endpoint: string, serviceName: string, ignoreUrls?: (string|RegExp)[]}} options
 */
export function start(options) {
  const url = options.endpoint.replace(/\/+$/, "") + "/v1/traces";
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": options.serviceName }),
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url }), scheduledDelayMillis: 1000 })],
  });
  // Stack context: the page runs each call inside context.with(...) itself, so no
  // zone.js is needed to carry the action's span across awaits.
  context.setGlobalContextManager(new StackContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new FetchInstrumentation({
        // Same-origin calls get `traceparent` by default; never the telemetry endpoints'.
        ignoreUrls: [url, ...(options.ignoreUrls || [])],
        ignoreNetworkEvents: true,
      }),
    ],
  });
  const tracer = provider.getTracer("delineate-dashboard");
  // Send what is buffered when the tab goes away.
  addEventListener("pagehide", () => provider.forceFlush());
  return {
    tracer,
    /** Run fn (which may start fetches synchronously) with span as the active span. */
    within(span, fn) {
      return context.with(trace.setSpan(context.active(), span), fn);
    },
    traceId(span) {
      return span.spanContext().traceId;
    },
    flush() {
      return provider.forceFlush();
    },
    SpanKind,
    SpanStatusCode,
  };
}
