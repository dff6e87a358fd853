/** What a CLI command gets from its caller: arguments and where to write. Tests pass their own. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Standard input, read whole (libvirt hook). */
  readStdin?: () => Promise<string>;
  env: NodeJS.ProcessEnv;
}

export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  stderr: (t) => void process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
  env: process.env,
  readStdin: async () => {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of process.stdin) {
      total += (c as Buffer).length;
      if (total > 16 * 1024 * 1024) throw new Error('standard input larger than 16 MiB');
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  },
};
