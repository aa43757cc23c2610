// Reads a JSON array of Kubernetes documents on stdin; prints a JSON array with, for each,
// {kind, name, error}: error is null when prometheus-operator's CRD schema accepts it.
import { readFileSync } from "node:fs";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { PrometheusRule, ServiceMonitor };
const documents = JSON.parse(readFileSync(0, "utf8"));
const results = documents.map((document) => {
  const model = models[document.kind];
  const name = document.metadata?.name ?? null;
  if (model === undefined) {
    return { kind: document.kind, name, error: `no CRD model for kind ${document.kind}` };
  }
  try {
    new model(document).validate();
    return { kind: document.kind, name, error: null };
  } catch (error) {
    return { kind: document.kind, name, error: String(error.message ?? error) };
  }
});
process.stdout.write(JSON.stringify(results));
