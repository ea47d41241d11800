import { randomBytes, randomUUID } from "node:crypto";
import type { ApiObject } from "./object-store.js";

/** What the API server audiences a token without one is for (kube-apiserver's default). */
export const API_SERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local";

export interface ServiceAccountTokenRequest {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The Pod the token is bound to (a projected token is); its uid is taken when the token is made. */
  readonly pod?: { readonly name: string; readonly uid: string; readonly nodeName: string };
  /** Default: the API server's own audience. */
  readonly audiences?: readonly string[];
  /** Default 3600 (what the kubelet asks for). */
  readonly expirationSeconds?: number;
}

interface TokenClaims extends ServiceAccountTokenRequest {
  readonly audiences: readonly string[];
  readonly expiresAtMs: number;
  readonly serviceAccountUid: string;
}

/**
 * ServiceAccount tokens as the TokenRequest API hands them out, and TokenReview as the API server
 * answers it: authenticated when the token is known, unexpired, for one of the asked audiences, and,
 * for a bound token, its Pod still exists with the same uid. Tokens are opaque random strings here
 * (the real ones are JWTs; nothing in Shoal reads them, it only passes them on to the review).
 */
export class TokenAuthority {
  private readonly tokens = new Map<string, TokenClaims>();
  private readonly accountUids = new Map<string, string>();

  issue(request: ServiceAccountTokenRequest): string {
    const token = `sa.${randomBytes(24).toString("base64url")}`;
    const account = `${request.namespace}/${request.serviceAccount}`;
    const serviceAccountUid = this.accountUids.get(account) ?? randomUUID();
    this.accountUids.set(account, serviceAccountUid);
    this.tokens.set(token, {
      ...request,
      audiences: request.audiences ?? [API_SERVER_AUDIENCE],
      expiresAtMs: Date.now() + (request.expirationSeconds ?? 3600) * 1000,
      serviceAccountUid,
    });
    return token;
  }

  /** The TokenReview's status for `review` (its spec.token and spec.audiences); `podUid` looks a Pod up now. */
  review(review: ApiObject, podUid: (namespace: string, name: string) => string | undefined): Record<string, unknown> {
    const spec = (review.spec ?? {}) as { token?: unknown; audiences?: unknown };
    const token = typeof spec.token === "string" ? spec.token : "";
    const wanted = Array.isArray(spec.audiences) && spec.audiences.length > 0 ? spec.audiences.map(String) : [API_SERVER_AUDIENCE];
    const claims = this.tokens.get(token);
    const refuse = (error: string): Record<string, unknown> => ({ authenticated: false, user: {}, error });
    if (claims === undefined) return refuse("invalid bearer token");
    if (claims.expiresAtMs <= Date.now()) return refuse("invalid bearer token, token has expired");
    const audiences = claims.audiences.filter((a) => wanted.includes(a));
    if (audiences.length === 0)
      return refuse(
        `invalid bearer token, token audiences ${JSON.stringify(claims.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}`,
      );
    if (claims.pod !== undefined) {
      const uid = podUid(claims.namespace, claims.pod.name);
      if (uid === undefined) return refuse(`invalid bearer token, pods "${claims.pod.name}" not found`);
      if (uid !== claims.pod.uid)
        return refuse(
          `invalid bearer token, the UID in the bound object reference (${claims.pod.uid}) does not match the UID in record. The object might have been deleted and then recreated`,
        );
    }
    const extra: Record<string, string[]> = { "authentication.kubernetes.io/credential-id": [`JTI=${randomUUID()}`] };
    if (claims.pod !== undefined) {
      extra["authentication.kubernetes.io/pod-name"] = [claims.pod.name];
      extra["authentication.kubernetes.io/pod-uid"] = [claims.pod.uid];
      extra["authentication.kubernetes.io/node-name"] = [claims.pod.nodeName];
    }
    return {
      authenticated: true,
      user: {
        username: `system:serviceaccount:${claims.namespace}:${claims.serviceAccount}`,
        uid: claims.serviceAccountUid,
        groups: ["system:serviceaccounts", `system:serviceaccounts:${claims.namespace}`, "system:authenticated"],
        extra,
      },
      audiences,
    };
  }
}
