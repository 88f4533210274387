// dockerode against berth's API (run by api/tests/clients.rs, with DOCKER_SOCKET set to
// the unix socket of a stand-in PID 1 holding `web` (running), `job` and `fresh`).
// Prints one line per check; any failure exits non-zero.
const Docker = require('dockerode');
const assert = require('assert');

async function main() {
  const docker = new Docker({ socketPath: process.env.DOCKER_SOCKET });
  const ping = await docker.ping();
  assert.strictEqual(ping.toString(), 'OK');
  const version = await docker.version();
  assert.strictEqual(version.ApiVersion, '1.47');
  console.log('version', version.ApiVersion);

  const all = await docker.listContainers({ all: true });
  const names = all.map((c) => c.Names[0]).sort();
  assert.deepStrictEqual(names, ['/fresh', '/job', '/web']);
  const running = await docker.listContainers({ filters: { status: ['running'] } });
  assert.deepStrictEqual(running.map((c) => c.Names[0]), ['/web']);
  console.log('list', names.join(' '));

  const web = docker.getContainer('web');
  const info = await web.inspect();
  assert.strictEqual(info.State.Running, true);
  assert.strictEqual(info.Name, '/web');
  // The multiplexed stream, demultiplexed by dockerode's modem.
  const logs = await web.logs({ stdout: true, stderr: true });
  const { PassThrough } = require('stream');
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => { text += d.toString(); });
  docker.modem.demuxStream(require('stream').Readable.from([logs]), out, out);
  await new Promise((r) => setTimeout(r, 100));
  assert.strictEqual(text, 'first\n');
  console.log('logs', JSON.stringify(text));

  await web.stop({ t: 1 });
  await web.start();
  console.log('stop start ok');

  await assert.rejects(docker.getContainer('nope').inspect(), (e) => e.statusCode === 404);
  console.log('not found');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
