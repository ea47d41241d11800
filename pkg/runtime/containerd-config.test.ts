import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TomlError } from "smol-toml";
import {
  checkContainerdConfig,
  configPathDirs,
  crioMirrorLocation,
  mergeImportedFacts,
  parseContainerdConfig,
  renderCrioDropIn,
  renderHostsToml,
} from "./index.js";

const HOSTS = "/etc/containerd/certs.d";

async function codes(toml: string): Promise<{ codes: string[]; severities: string[]; effective: boolean }> {
  const facts = parseContainerdConfig(toml);
  const checked = await checkContainerdConfig(facts, {
    configFile: "/etc/containerd/config.toml",
    hostsDir: HOSTS,
    isHostsDir: (dir) => Promise.resolve(dir.replace(/\/$/, "") === HOSTS),
  });
  return {
    codes: checked.problems.map((p) => p.code),
    severities: checked.problems.map((p) => p.severity),
    effective: checked.mirrorEffective,
  };
}

const v2 = (registry: string): string => `version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n${registry}\n`;
const v3 = (registry: string): string => `version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n${registry}\n`;

describe("containerd config.toml checks", () => {
  it("finds config_path in each schema's own section", () => {
    assert.equal(parseContainerdConfig(v2(`config_path = "${HOSTS}"`)).configPath, HOSTS);
    assert.equal(parseContainerdConfig(v3(`config_path = '${HOSTS}'`)).configPath, HOSTS);
    assert.equal(parseContainerdConfig(`[plugins.cri.registry]\nconfig_path = "${HOSTS}"\n`).version, 1);
    assert.equal(parseContainerdConfig(`[plugins.cri.registry]\nconfig_path = "${HOSTS}"\n`).configPath, HOSTS);
    // A schema-2 section in a schema-3 file is not where containerd 2.x looks.
    assert.equal(
      parseContainerdConfig(`version = 3\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "${HOSTS}"\n`).configPath,
      undefined,
    );
    assert.equal(parseContainerdConfig(v2('config_path = ""')).configPath, undefined);
  });

  it("classifies every registry setup", async () => {
    const table: [string, string[], string[], boolean][] = [
      [v2(`config_path = "${HOSTS}"`), [], [], true],
      [v3(`config_path = "${HOSTS}/"`), [], [], true],
      [v2('config_path = ""'), ["CONFIG_PATH_NOT_SET"], ["error"], false],
      [v3(""), ["CONFIG_PATH_NOT_SET"], ["warning"], false],
      [v2(`config_path = "/etc/other"`), ["CONFIG_PATH_OTHER_DIR"], ["error"], false],
      [v2(`config_path = "${HOSTS}:/etc/docker/certs.d"`), ["CONFIG_PATH_MULTIPLE_DIRS"], ["warning"], false],
      [v3(`config_path = "/etc/docker/certs.d:${HOSTS}"`), ["CONFIG_PATH_MULTIPLE_DIRS"], ["error"], false],
      [
        v2('[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\nendpoint = ["https://m.example"]'),
        ["LEGACY_REGISTRY_MIRRORS"],
        ["error"],
        false,
      ],
      [
        v2(`config_path = "${HOSTS}"\n[plugins."io.containerd.grpc.v1.cri".registry.configs."r.example".tls]\ninsecure_skip_verify = true`),
        ["REGISTRY_CONFIG_CONFLICT"],
        ["error"],
        false,
      ],
      [
        v2(`config_path = "${HOSTS}"\n[plugins."io.containerd.grpc.v1.cri".registry.configs."r.example".auth]\nusername = "u"`),
        [],
        [],
        true,
      ],
      [
        `version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n`,
        ["CONTAINERD_CRI_DISABLED", "CONFIG_PATH_NOT_SET"],
        ["warning", "error"],
        false,
      ],
      [`version = 7\n`, ["CONTAINERD_CONFIG_VERSION_UNKNOWN", "CONFIG_PATH_NOT_SET"], ["warning", "error"], false],
    ];
    for (const [toml, want, severities, effective] of table) {
      const got = await codes(toml);
      assert.deepEqual(got.codes, want, toml);
      assert.deepEqual(got.severities, severities, toml);
      assert.equal(got.effective, effective, toml);
    }
  });

  it("an import's registry settings override the main file's", () => {
    const main = parseContainerdConfig(v2(`config_path = "/etc/old"`));
    const imported = parseContainerdConfig(v2(`config_path = "${HOSTS}"`));
    assert.equal(mergeImportedFacts(main, [imported]).configPath, HOSTS);
    assert.equal(mergeImportedFacts(main, [parseContainerdConfig("version = 2\n")]).configPath, "/etc/old");
  });

  it("splits config_path like containerd 1.x does", () => {
    assert.deepEqual(configPathDirs("/a:/b::/c "), ["/a", "/b", "/c"]);
  });

  it("refuses invalid TOML with a position", () => {
    assert.throws(
      () => parseContainerdConfig("version = 2\n[plugins\n"),
      (e: unknown) => e instanceof TomlError && e.line === 2,
    );
  });
});

describe("rendered runtime files", () => {
  it("hosts.toml: the agent with pull+resolve and a dial timeout, the upstream as server", () => {
    const text = renderHostsToml({ registry: "docker.io", server: "https://registry-1.docker.io" }, "http://127.0.0.1:5050");
    assert.match(text, /^# Managed by shoal configure\./);
    assert.match(text, /\nserver = "https:\/\/registry-1\.docker\.io"\n/);
    assert.match(text, /\n\[host\."http:\/\/127\.0\.0\.1:5050"\]\n {2}capabilities = \["pull", "resolve"\]\n {2}dial_timeout = "500ms"\n$/);
    assert.doesNotMatch(renderHostsToml({ registry: "_default" }, "http://127.0.0.1:5050"), /server =/);
  });

  it("CRI-O mirror locations carry the registry as the first path segment, ports as host_port", () => {
    assert.equal(crioMirrorLocation("http://127.0.0.1:5050", "ghcr.io"), "127.0.0.1:5050/ghcr.io");
    assert.equal(crioMirrorLocation("http://10.1.2.3:5050", "registry.local:5000"), "10.1.2.3:5050/registry.local_5000");
    assert.match(
      renderCrioDropIn(["quay.io"], "https://node.example:5443"),
      /location = "node\.example:5443\/quay\.io"\ninsecure = false\n$/,
    );
  });
});
