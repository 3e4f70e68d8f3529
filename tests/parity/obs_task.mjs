// Runs the real iExec SDK's task.obsTask against a JSON-RPC endpoint and prints every event.
//
// usage: node obs_task.mjs <sdk-dir> <rpc-url> <hub-address>
// Once the SDK is loaded it prints "READY" and reads one line from stdin: the tasks to observe,
// as space-separated "<taskid>[:<dealid>]" (so that tasks can be created with deadlines
// relative to the first poll). Each event prints "<taskid> <message> <statusName>"; the end
// of each observation prints "<taskid> COMPLETE" or "<taskid> ERROR <message>".
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const [sdkDir, rpcUrl, hubAddress] = process.argv.slice(2);
const sdkRequire = createRequire(`${sdkDir}/package.json`);
const { IExec } = await import(pathToFileURL(sdkRequire.resolve('iexec')).href);

const deadline = setTimeout(() => {
  console.log('DEADLINE the observations did not end in time');
  process.exit(2);
}, Number(process.env.PARITY_DEADLINE_MS || 55000));

const iexec = new IExec({ ethProvider: rpcUrl }, { hubAddress });
console.log('READY');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const { value: line = '' } = await lines.next();
const targets = line.split(' ').filter(Boolean);

const observe = async (target) => {
  const [taskid, dealid] = target.split(':');
  const observable = await iexec.task.obsTask(taskid, dealid ? { dealid } : {});
  await new Promise((resolve) => {
    observable.subscribe({
      next: ({ message, task }) => console.log(`${taskid} ${message} ${task.statusName}`),
      error: (error) => {
        console.log(`${taskid} ERROR ${String(error.message).split('\n')[0]}`);
        resolve();
      },
      complete: () => {
        console.log(`${taskid} COMPLETE`);
        resolve();
      },
    });
  });
};

await Promise.all(targets.map(observe));
clearTimeout(deadline);
process.exit(0);
