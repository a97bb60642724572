// Compile FedLedger's Solidity sources into committed JSON artifacts.
//
// Runbook (from the repository root):
//   node scripts/compile_contracts.mjs           # rewrite contracts/artifacts/*.json
//   node scripts/compile_contracts.mjs --check   # exit 1 if the committed artifacts are stale
//
// Uses the pinned solc-js (npm solc@0.8.37) through its standard-JSON API. evmVersion is pinned
// to "cancun": solc 0.8.37 targets osaka by default, which py-evm (Prague) cannot run. The output
// is byte-for-byte reproducible (fixed key order, 2-space indent, trailing newline), so --check
// can compare files exactly. Exit codes: 0 ok, 1 stale artifacts, 2 compilation failed.

import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync, existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const COMPILER = "0.8.37";
const EVM_VERSION = "cancun";
const OPTIMIZER = { enabled: true, runs: 200 };
// The IR pipeline: the protocol functions need more than the 16 reachable stack slots of the
// legacy code generator, and it optimizes across functions.
const VIA_IR = true;

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const ARTIFACTS_DIR = join(ROOT, "contracts", "artifacts");

// One contract per source file; test-only contracts are marked so nobody deploys them for real.
const CONTRACTS = [
  { source: "contracts/FedLedger.sol", name: "FedLedger", testOnly: false },
  { source: "contracts/test/ReentrantWithdrawer.sol", name: "ReentrantWithdrawer", testOnly: true },
];

function compile() {
  if (!solc.version().startsWith(COMPILER + "+")) {
    throw new Error(`solc-js ${solc.version()} found, ${COMPILER} required (npm ci)`);
  }
  const sources = {};
  const raw = {};
  for (const c of CONTRACTS) {
    raw[c.source] = readFileSync(join(ROOT, c.source));
    sources[c.source] = { content: raw[c.source].toString("utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      optimizer: OPTIMIZER,
      viaIR: VIA_IR,
      evmVersion: EVM_VERSION,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length > 0) {
    throw new Error(`${errors.length} compilation error(s)`);
  }

  const artifacts = {};
  for (const c of CONTRACTS) {
    const out = output.contracts[c.source][c.name];
    const artifact = {
      contractName: c.name,
      sourcePath: c.source,
      testOnly: c.testOnly,
      abi: out.abi,
      bytecode: "0x" + out.evm.bytecode.object,
      deployedBytecode: "0x" + out.evm.deployedBytecode.object,
      compiler: COMPILER,
      evmVersion: EVM_VERSION,
      optimizer: OPTIMIZER,
      viaIR: VIA_IR,
      sourceHash: createHash("sha256").update(raw[c.source]).digest("hex"),
    };
    artifacts[`${c.name}.json`] = JSON.stringify(artifact, null, 2) + "\n";
  }
  return artifacts;
}

function main() {
  const check = process.argv.includes("--check");
  let artifacts;
  try {
    artifacts = compile();
  } catch (err) {
    process.stderr.write(`compile_contracts: ${err.message}\n`);
    process.exit(2);
  }

  if (check) {
    const stale = [];
    for (const [file, text] of Object.entries(artifacts)) {
      const path = join(ARTIFACTS_DIR, file);
      if (!existsSync(path) || readFileSync(path, "utf8") !== text) stale.push(file);
    }
    const extra = existsSync(ARTIFACTS_DIR)
      ? readdirSync(ARTIFACTS_DIR).filter((f) => f.endsWith(".json") && !(f in artifacts))
      : [];
    for (const f of extra) stale.push(`${f} (no source)`);
    if (stale.length > 0) {
      process.stderr.write(`stale artifacts: ${stale.join(", ")}; run node scripts/compile_contracts.mjs\n`);
      process.exit(1);
    }
    process.stdout.write(`artifacts up to date (${Object.keys(artifacts).join(", ")})\n`);
    return;
  }

  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  for (const [file, text] of Object.entries(artifacts)) {
    writeFileSync(join(ARTIFACTS_DIR, file), text);
    process.stdout.write(`wrote contracts/artifacts/${file}\n`);
  }
}

main();
