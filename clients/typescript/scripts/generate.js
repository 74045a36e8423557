// Copies the repository's keyward.proto into this package (it is loaded at
// run time) and generates its TypeScript types with proto-loader-gen-types.
// Nothing generated is committed; `npm run build` runs this first.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const source = path.resolve(root, "../../proto/keyward/v1/keyward.proto");
const target = path.join(root, "proto/keyward/v1/keyward.proto");
fs.mkdirSync(path.dirname(target), { recursive: true });
fs.copyFileSync(source, target);

const generated = path.join(root, "src/generated");
fs.rmSync(generated, { recursive: true, force: true });
// The same options as the loader in src/loader.ts, so the types match the
// objects at run time.
execFileSync(
  process.execPath,
  [
    require.resolve("@grpc/proto-loader/build/bin/proto-loader-gen-types.js"),
    // The file first: --includeDirs takes every word after it as another
    // directory.
    "keyward/v1/keyward.proto",
    "--longs=String",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--grpcLib=@grpc/grpc-js",
    "--includeComments",
    "--outDir=" + generated,
    "--includeDirs=" + path.join(root, "proto"),
  ],
  { stdio: "inherit" },
);
