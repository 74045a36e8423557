// Runs a real `keyward serve` for the tests: port 0 (or a given port, to
// restart in place), a fresh SQLite file, the bound address read from the
// JSON log line "keyward listening".
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";

/** The keyward binary: $KEYWARD_BIN (the cargo test sets it), else the debug build. */
export function keywardBinary(): string {
  const candidate = process.env.KEYWARD_BIN ?? path.resolve(__dirname, "../../../../target/debug/keyward");
  if (!fs.existsSync(candidate)) {
    throw new Error(`no keyward binary at ${candidate}: run \`cargo build\` or set KEYWARD_BIN`);
  }
  return candidate;
}

/** A fresh directory for one test's database. */
export function freshDatabase(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keyward-ts-"));
  return path.join(dir, "keyward.db");
}

export class KeywardServer {
  private constructor(
    private readonly child: ChildProcess,
    readonly address: string,
    readonly database: string,
  ) {}

  get port(): number {
    return Number(this.address.split(":").pop());
  }

  static async start(database: string, port = 0): Promise<KeywardServer> {
    const child = spawn(
      keywardBinary(),
      ["--log-format", "json", "serve", "--listen", `127.0.0.1:${port}`, "--database-url", `sqlite://${database}`],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    const log: string[] = [];
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`keyward did not start in 30 s:\n${log.join("\n")}`)), 30_000);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`keyward exited with ${code}:\n${log.join("\n")}`));
      });
      readline.createInterface({ input: child.stderr! }).on("line", (line) => {
        log.push(line);
        try {
          const entry = JSON.parse(line);
          if (entry.message === "keyward listening") {
            clearTimeout(timer);
            resolve(entry.addr);
          }
        } catch {
          // Not JSON: keep it for the error message.
        }
      });
    });
    child.removeAllListeners("exit");
    return new KeywardServer(child, address, database);
  }

  /** SIGTERM, then wait for the process to exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    await exited;
  }
}
