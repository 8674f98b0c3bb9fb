// Decides AWS requests with @cloud-copilot/iam-simulate, for tests/tests/access.rs.
// stdin: a JSON array of simulations (identityPolicies, resourcePolicy, request); stdout: a JSON
// array, one {"result": "Allowed" | "ExplicitlyDenied" | "ImplicitlyDenied"} or {"error": …}
// each. Reads and writes nothing else.
import { runSimulation } from '@cloud-copilot/iam-simulate'

let input = ''
for await (const chunk of process.stdin) input += chunk
const out = []
for (const simulation of JSON.parse(input)) {
  const r = await runSimulation(
    { serviceControlPolicies: [], resourceControlPolicies: [], ...simulation },
    {}
  )
  if (r.resultType === 'error') out.push({ error: r.errors })
  else out.push({ result: r.overallResult })
}
process.stdout.write(JSON.stringify(out))
