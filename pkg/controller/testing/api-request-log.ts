import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { type RecordedApiRequest, rbacRequestKinds } from "../../k8s/testing/index.js";
import { NAMESPACE, type TestCluster } from "./test-cluster.js";

/**
 * The API requests a test file's controllers made, compared with the list kept in testdata (the chart's
 * RBAC is checked against it). SHOAL_UPDATE_API_REQUESTS=1 rewrites the list after a deliberate change.
 */
export class ApiRequestLog {
  private readonly requests: RecordedApiRequest[] = [];

  /** `file`: pkg/controller/testdata/<name>.json, relative to this compiled file's tree. */
  constructor(private readonly file: URL) {}

  collect(cluster: TestCluster): void {
    this.requests.push(...cluster.api.requests());
  }

  async check(): Promise<void> {
    const text = `${JSON.stringify(rbacRequestKinds(this.requests, NAMESPACE), null, 2)}\n`;
    if (process.env.SHOAL_UPDATE_API_REQUESTS === "1") await writeFile(this.file, text);
    const name = this.file.pathname.split("/").slice(-3).join("/");
    assert.equal(
      text,
      await readFile(this.file, "utf8"),
      `the controller's API requests differ from pkg/${name} (rerun with SHOAL_UPDATE_API_REQUESTS=1 and update the chart's roles)`,
    );
    assert.ok(!this.requests.some((r) => r.verb === "unknown"), "no request to a path the double does not model");
  }
}
