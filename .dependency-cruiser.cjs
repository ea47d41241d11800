// The dependency rules of docs/development.md, enforced by `npm run lint`.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: "no-circular", severity: "error", comment: "No import cycles anywhere.", from: {}, to: { circular: true } },
    {
      name: "leaf-packages",
      severity: "error",
      comment: "pkg/oci, pkg/metrics, pkg/gen, pkg/config, pkg/bounds, pkg/piece and pkg/util import nothing else of pkg/.",
      from: { path: "^pkg/(oci|metrics|gen|config|bounds|piece|util)/" },
      to: { path: "^pkg/", pathNot: ["^pkg/$1/"] },
    },
    { name: "nothing-imports-cmd", severity: "error", from: { path: "^(pkg|e2e|charts)/" }, to: { path: "^cmd/" } },
    { name: "pkg-does-not-import-e2e", severity: "error", from: { path: "^pkg/" }, to: { path: "^e2e/" } },
    {
      name: "pkg-imports-through-index",
      severity: "error",
      comment: "A package is used through its index.ts; only its own files, tests and testing/ folders reach inside.",
      from: { path: "^pkg/([^/]+)/", pathNot: "\\.test\\.ts$|/testing/" },
      to: { path: "^pkg/[^/]+/", pathNot: ["^pkg/$1/", "^pkg/[^/]+/index\\.ts$", "^pkg/gen/", "/testing/"] },
    },
    {
      name: "others-import-through-index",
      severity: "error",
      comment: "cmd, e2e and charts use a package through its index.ts (tests and testing/ folders excepted).",
      from: { path: "^(cmd|e2e|charts)/", pathNot: "\\.test\\.ts$|/testing/" },
      to: { path: "^pkg/[^/]+/", pathNot: ["^pkg/[^/]+/index\\.ts$", "^pkg/gen/", "/testing/"] },
    },
    {
      name: "tests-only-import-testing",
      severity: "error",
      comment: "Test support is for tests and cmd demo wiring, not production packages.",
      from: { path: "^pkg/", pathNot: "\\.test\\.ts$|/testing/" },
      to: { path: "/testing/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    exclude: { path: "^dist/" },
  },
};
