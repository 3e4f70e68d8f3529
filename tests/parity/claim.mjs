// Runs the real iExec SDK's task.claim, then task.obsTask, against a JSON-RPC endpoint.
//
// usage: PARITY_PRIVATE_KEY=0x... node claim.mjs <sdk-dir> <rpc-url> <hub-address>
// The key comes from the environment (never the command line). Once the SDK is loaded it prints
// "READY" and reads two lines from stdin. The first lists task ids to claim, one after another:
// each prints "<taskid> CLAIMED <txhash>" or "<taskid> ERROR <message>", then "CLAIMS DONE".
// The second lists task ids to observe: each event prints "<taskid> <message> <statusName>",
// the end of each observation "<taskid> COMPLETE" or "<taskid> ERROR <message>".
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const [sdkDir, rpcUrl, hubAddress] = process.argv.slice(2);
const sdkRequire = createRequire(`${sdkDir}/package.json`);
const { IExec, utils } = await import(pathToFileURL(sdkRequire.resolve('iexec')).href);

const deadline = setTimeout(() => {
  console.log('DEADLINE the claims and observations did not end in time');
  process.exit(2);
}, Number(process.env.PARITY_DEADLINE_MS || 90000));

const signer = utils.getSignerFromPrivateKey(rpcUrl, process.env.PARITY_PRIVATE_KEY);
const iexec = new IExec({ ethProvider: signer }, { hubAddress });
const firstLine = (error) => String(error.message).split('\n')[0];

console.log('READY');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const ids = async () => {
  const { value: line = '' } = await lines.next();
  return line.split(' ').filter(Boolean);
};

for (const taskid of await ids()) {
  try {
    const txHash = await iexec.task.claim(taskid);
    console.log(`${taskid} CLAIMED ${txHash}`);
  } catch (error) {
    console.log(`${taskid} ERROR ${firstLine(error)}`);
  }
}
console.log('CLAIMS DONE');

const observe = async (taskid) => {
  const observable = await iexec.task.obsTask(taskid);
  await new Promise((resolve) => {
    observable.subscribe({
      next: ({ message, task }) => console.log(`${taskid} ${message} ${task.statusName}`),
      error: (error) => {
        console.log(`${taskid} ERROR ${firstLine(error)}`);
        resolve();
      },
      complete: () => {
        console.log(`${taskid} COMPLETE`);
        resolve();
      },
    });
  });
};

await Promise.all((await ids()).map(observe));
clearTimeout(deadline);
process.exit(0);
