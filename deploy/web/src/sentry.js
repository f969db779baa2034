// The part of Sentry's browser SDK the console uses, as one global (`DelineateSentry`).
// feedbackIntegration is the synchronous one: its form is in this bundle, never fetched
// from Sentry's CDN (the page loads nothing from other origins).
export {
  init,
  browserTracingIntegration,
  feedbackIntegration,
  getFeedback,
  captureException,
  captureMessage,
  withScope,
  setTag,
  lastEventId,
  flush,
} from "@sentry/browser";
