// Loads keyward.proto at run time with the options that make proto-loader's
// objects match the generated types (scripts/generate.js passes the same):
// string enums, 64-bit integers as decimal strings, defaults filled in (so
// `allowed: false` and a checkpoint's `seq: "0"` are present, not absent)
// and camelCase field names.
import * as path from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import type { ProtoGrpcType } from "./generated/keyward";
import type { KeyServiceClient } from "./generated/keyward/v1/KeyService";

export type { KeyServiceClient };

/**
 * proto-loader options for keyward.proto. Its defaults are what trips a
 * caller: snake_case keys are silently dropped (camelCase is the default
 * when `keepCase` is false), enums arrive as numbers, 64-bit integers as
 * `Long` objects, and fields holding their default value are absent.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Where the package keeps its copy of keyward.proto (see scripts/generate.js). */
export const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");

let loaded: ProtoGrpcType | undefined;

/** The keyward.v1 package, loaded once. */
export function keywardPackage(): ProtoGrpcType {
  if (loaded === undefined) {
    const definition = protoLoader.loadSync("keyward/v1/keyward.proto", {
      ...LOADER_OPTIONS,
      includeDirs: [PROTO_ROOT],
    });
    loaded = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return loaded;
}
