import {
  type ConfigurationOptions,
  Observable,
  type ObservableMiddleware,
  type RequestContext,
  type ResponseContext,
} from "@kubernetes/client-node";

/**
 * Per-call options that make one client-node request honour `signal`. client-node 2.x takes an
 * AbortSignal only through request middleware (RequestContext.setSignal); "append" keeps the client's
 * own middleware (User-Agent).
 */
export function withSignal(signal: AbortSignal): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (context: RequestContext): Observable<RequestContext> => {
      context.setSignal(signal);
      return new Observable(Promise.resolve(context));
    },
    post: (context: ResponseContext): Observable<ResponseContext> => new Observable(Promise.resolve(context)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: "append" };
}
