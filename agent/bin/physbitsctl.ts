#!/usr/bin/env node
/**
 * physbitsctl: the local CLI. Exit codes follow the monitoring-plugin convention (0 ok, 1 warning,
 * 2 critical, 3 unknown); 64 usage, 78 config. Operator mistakes print one line, never a stack.
 */
import { runCli } from '../cli/run-cli';
import { processIo } from '../cli/cli-io';

const controller = new AbortController();
process.once('SIGINT', () => controller.abort());
process.once('SIGTERM', () => controller.abort());
void runCli(process.argv.slice(2), processIo, controller.signal).then((code) => {
  process.exitCode = code;
});
