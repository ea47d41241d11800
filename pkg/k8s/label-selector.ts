import { K8sError } from "./errors.js";

export type SelectorOperator = "=" | "!=" | "in" | "notin" | "exists" | "!exists";

export interface Requirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  /** One value for = and !=, the set for in/notin, none for exists/!exists. */
  readonly values: readonly string[];
}

/** A parsed equality- or set-based label selector, as the API server's `labelSelector` query takes it. */
export class LabelSelector {
  constructor(readonly requirements: readonly Requirement[]) {}

  /** Every requirement holds (an empty selector matches everything). */
  matches(labels: Readonly<Record<string, string>> | undefined): boolean {
    const of = labels ?? {};
    return this.requirements.every((r) => {
      const value = Object.hasOwn(of, r.key) ? of[r.key] : undefined;
      switch (r.operator) {
        case "=":
        case "in":
          return value !== undefined && r.values.includes(value);
        case "!=":
        case "notin":
          return value === undefined || !r.values.includes(value);
        case "exists":
          return value !== undefined;
        case "!exists":
          return value === undefined;
      }
    });
  }

  /** The canonical text form (what is sent as `labelSelector`). */
  toString(): string {
    return this.requirements
      .map((r) => {
        switch (r.operator) {
          case "=":
          case "!=":
            return `${r.key}${r.operator}${r.values[0] ?? ""}`;
          case "in":
          case "notin":
            return `${r.key} ${r.operator} (${r.values.join(",")})`;
          case "exists":
            return r.key;
          case "!exists":
            return `!${r.key}`;
        }
      })
      .join(",");
  }
}

// Label keys: an optional DNS-subdomain prefix and a name of at most 63 characters; values likewise.
const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const PREFIX = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/**
 * Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k` (`==` is `=`). Throws K8sError ERR_K8S_SELECTOR naming
 * the offending part. The numeric `<`/`>` operators of the API are not supported: Shoal never needs them.
 */
export function parseLabelSelector(text: string): LabelSelector {
  const requirements: Requirement[] = [];
  const tokens = tokenize(text);
  let i = 0;
  const fail = (why: string): never => {
    throw new K8sError("ERR_K8S_SELECTOR", `label selector ${JSON.stringify(text)}: ${why}`);
  };
  const peek = (): string | undefined => tokens[i];
  const take = (): string => tokens[i++] ?? fail("unexpected end");
  if (tokens.length === 0) return new LabelSelector([]);
  for (;;) {
    let first = take();
    let negated = false;
    if (first === "!") {
      negated = true;
      first = take();
    }
    const key = checkKey(first, fail);
    const next = peek();
    if (negated) {
      requirements.push({ key, operator: "!exists", values: [] });
    } else if (next === undefined || next === ",") {
      requirements.push({ key, operator: "exists", values: [] });
    } else if (next === "=" || next === "==" || next === "!=") {
      i++;
      const after = peek();
      const value = after === undefined || after === "," ? "" : take();
      requirements.push({ key, operator: next === "!=" ? "!=" : "=", values: [checkValue(value, fail)] });
    } else if (next === "in" || next === "notin") {
      i++;
      if (take() !== "(") fail(`expected "(" after ${next}`);
      const values: string[] = [];
      for (;;) {
        const token = take();
        if (token === ")" && values.length === 0) fail(`${next} needs at least one value`);
        if (token === "," || token === ")") fail(`empty value in the set of ${key}`);
        values.push(checkValue(token, fail));
        const sep = take();
        if (sep === ")") break;
        if (sep !== ",") fail(`expected "," or ")" in the set of ${key}, got ${JSON.stringify(sep)}`);
      }
      requirements.push({ key, operator: next, values });
    } else {
      fail(`unexpected ${JSON.stringify(next)} after ${key}`);
    }
    const sep = peek();
    if (sep === undefined) break;
    if (sep !== ",") fail(`expected "," after the requirement on ${key}, got ${JSON.stringify(sep)}`);
    i++;
    if (peek() === undefined) fail("trailing comma");
  }
  return new LabelSelector(requirements);
}

function tokenize(text: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text.charAt(i);
    if (c === " " || c === "\t") {
      i++;
    } else if (text.startsWith("==", i) || text.startsWith("!=", i)) {
      tokens.push(text.slice(i, i + 2));
      i += 2;
    } else if ("=!(),".includes(c)) {
      tokens.push(c);
      i++;
    } else {
      let j = i;
      while (j < text.length && !" \t=!(),".includes(text.charAt(j))) j++;
      tokens.push(text.slice(i, j));
      i = j;
    }
  }
  return tokens;
}

function checkKey(key: string, fail: (why: string) => never): string {
  if (key === "in" || key === "notin" || "=!(),".includes(key)) fail(`expected a label key, got ${JSON.stringify(key)}`);
  const slash = key.indexOf("/");
  const name = slash < 0 ? key : key.slice(slash + 1);
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  if (!NAME.test(name) || (prefix !== undefined && (prefix.length > 253 || !PREFIX.test(prefix))))
    fail(`invalid label key ${JSON.stringify(key)}`);
  return key;
}

function checkValue(value: string, fail: (why: string) => never): string {
  if (!VALUE.test(value)) fail(`invalid label value ${JSON.stringify(value)}`);
  return value;
}
