/** A `Status` failure body as the API server sends it, and the error that carries one through the double. */
export interface StatusBody {
  readonly kind: "Status";
  readonly apiVersion: "v1";
  readonly metadata: Record<string, never>;
  readonly status: "Failure";
  readonly message: string;
  readonly reason: string;
  readonly code: number;
  readonly details?: { readonly name?: string; readonly group?: string; readonly kind?: string };
}

export class ApiStatusError extends Error {
  override readonly name = "ApiStatusError";
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusBody["details"],
  ) {
    super(message);
  }

  get body(): StatusBody {
    return {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: this.message,
      reason: this.reason,
      code: this.code,
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

/** `pods "x"`, `leases.coordination.k8s.io "x"`: how the API server names an object in messages. */
function qualified(resource: string, group: string, name: string): string {
  return `${resource}${group === "" ? "" : `.${group}`} ${JSON.stringify(name)}`;
}

export const statuses = {
  badRequest: (message: string) => new ApiStatusError(400, "BadRequest", message),
  unauthorized: () => new ApiStatusError(401, "Unauthorized", "Unauthorized"),
  notFound: (resource: string, group: string, name: string) =>
    new ApiStatusError(404, "NotFound", `${qualified(resource, group, name)} not found`, { name, group, kind: resource }),
  noRoute: () => new ApiStatusError(404, "NotFound", "the server could not find the requested resource"),
  methodNotAllowed: (method: string) =>
    new ApiStatusError(405, "MethodNotAllowed", `the server does not allow this method on the requested resource (${method})`),
  alreadyExists: (resource: string, group: string, name: string) =>
    new ApiStatusError(409, "AlreadyExists", `${qualified(resource, group, name)} already exists`, { name, group, kind: resource }),
  conflict: (resource: string, group: string, name: string) =>
    new ApiStatusError(
      409,
      "Conflict",
      `Operation cannot be fulfilled on ${qualified(resource, group, name)}: the object has been modified; please apply your changes to the latest version and try again`,
      { name, group, kind: resource },
    ),
  expired: (requested: number, oldest: number) => new ApiStatusError(410, "Expired", `too old resource version: ${requested} (${oldest})`),
  invalid: (resource: string, group: string, name: string, why: string) =>
    new ApiStatusError(422, "Invalid", `${qualified(resource, group, name)} is invalid: ${why}`, { name, group, kind: resource }),
  unavailable: (message: string) => new ApiStatusError(503, "ServiceUnavailable", message),
};
