// The repository stands on its own: every link in its Markdown resolves to a file (and heading) inside
// it, and no file refers to documents or issue numbers that a clone of the repository does not have.
import assert from "node:assert/strict";
import { readdir, readFile, stat } from "node:fs/promises";
import { dirname, extname, join, relative, resolve, sep } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

/** The repository root: this file runs as dist/cmd/shoal/docs.test.js. */
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** This test's source, which names the patterns it looks for. */
const SELF = "cmd/shoal/docs.test.ts";

/** Directories that are not the repository's own text: dependencies, build output, caches, VCS. */
const SKIPPED_DIRS = new Set(["node_modules", "dist", ".git", ".cache", ".bench"]);
const TEXT_EXTENSIONS = new Set([".ts", ".md", ".yaml", ".yml", ".json", ".tpl", ".txt", ".cjs", ".js", ".proto", ".toml"]);
const TEXT_FILES = new Set(["Dockerfile", ".ci/run", ".dockerignore", ".gitignore"]);
/** Generated from package.json; names only packages. */
const SKIPPED_FILES = new Set(["package-lock.json"]);

/** Mentions of documents outside the repository, and of issue numbers. */
const OUTSIDE_REFERENCES: readonly RegExp[] = [
  /\.\.\/shared\//g,
  /\b(?:DESIGN|STYLE|ENVIRONMENT)\.md\b/g,
  /\bissues? #\d+/gi,
  /\bissues\/\d+\b/g,
];

async function repositoryFiles(dir = ROOT): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!SKIPPED_DIRS.has(entry.name) && !entry.name.startsWith("dist-")) files.push(...(await repositoryFiles(path)));
    } else if (entry.isFile()) {
      files.push(relative(ROOT, path).split(sep).join("/"));
    }
  }
  return files.sort();
}

function isText(file: string): boolean {
  return !SKIPPED_FILES.has(file) && (TEXT_FILES.has(file) || TEXT_EXTENSIONS.has(extname(file)));
}

/** Markdown without fenced code blocks and inline code spans, where link syntax is literal text. */
function proseOf(markdown: string): string {
  let fenced = false;
  const lines: string[] = [];
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) {
      fenced = !fenced;
      lines.push("");
      continue;
    }
    lines.push(fenced ? "" : line.replace(/`[^`]*`/g, (code) => code.replace(/[[\]()]/g, " ")));
  }
  return lines.join("\n");
}

/** The anchors GitHub gives a document's headings (duplicates numbered), plus explicit `id="…"` anchors. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) continue;
    for (const match of line.matchAll(/\bid="([^"]+)"/g)) anchors.add(match[1] ?? "");
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading === null) continue;
    const text = (heading[1] ?? "").replace(/\[([^\]]*)\]\([^)]*\)/g, "$1").replace(/`/g, "");
    const slug = text
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\p{M} _-]/gu, "")
      .replace(/ /g, "-");
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

describe("the repository's documentation", () => {
  it("has links that resolve to files and headings inside the repository", async () => {
    const markdown = (await repositoryFiles()).filter((file) => file.endsWith(".md"));
    assert.ok(markdown.includes("README.md") && markdown.includes("docs/architecture.md"), `found ${markdown.join(", ")}`);
    const broken: string[] = [];
    let checked = 0;
    for (const file of markdown) {
      const text = await readFile(join(ROOT, file), "utf8");
      for (const match of proseOf(text).matchAll(/\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
        const target = match[1] ?? "";
        // Public web pages are outside the repository by nature; only relative links can break with it.
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
        checked++;
        const [pathPart = "", anchor] = target.split("#", 2);
        const resolved = pathPart === "" ? join(ROOT, file) : resolve(ROOT, dirname(file), decodeURIComponent(pathPart));
        const inside = relative(ROOT, resolved);
        if (inside.startsWith("..") || resolve(inside) === inside) {
          broken.push(`${file}: ${target} points outside the repository`);
        } else if (!(await exists(resolved))) {
          broken.push(`${file}: ${target} does not exist`);
        } else if (anchor !== undefined) {
          if (!resolved.endsWith(".md")) broken.push(`${file}: ${target} has an anchor but is not Markdown`);
          else if (!anchorsOf(await readFile(resolved, "utf8")).has(anchor))
            broken.push(`${file}: ${target} names no heading of ${inside}`);
        }
      }
    }
    assert.ok(checked > 50, `only ${checked} relative links found: the link pattern is wrong`);
    assert.deepEqual(broken, []);
  });

  it("keeps the README's quick-start commands true", async () => {
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    assert.match(readme, /npm ci && npm start/);
    assert.match(readme, /npm test\b/);
    const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { scripts?: Record<string, string> };
    assert.match(pkg.scripts?.start ?? "", /main\.js demo\b/, "npm start runs the demo");
    assert.ok(pkg.scripts?.test !== undefined, "package.json has a test script");
  });

  it("refers to nothing outside the repository: no outside documents, no issue numbers", async () => {
    const found: string[] = [];
    for (const file of (await repositoryFiles()).filter(isText)) {
      if (file === SELF) continue;
      const text = await readFile(join(ROOT, file), "utf8");
      for (const pattern of OUTSIDE_REFERENCES) for (const match of text.matchAll(pattern)) found.push(`${file}: ${match[0]}`);
    }
    assert.deepEqual([...new Set(found)].sort(), [], "point at docs/ instead");
  });
});
