import { ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { CronJob } from 'kubernetes-models/batch/v1';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1';
import { configMapHash, idOf, isMap, type K8sObject } from './kustomize.js';

/**
 * Schema validation (the `kubernetes-models` package: the Kubernetes OpenAPI schemas compiled to validators) and
 * the deployment policy of issue 7, as functions returning the problems found, so tests can also show that a
 * broken manifest is caught.
 */

/** The kinds berth's manifests may use; anything else is reported rather than silently not validated. */
const MODELS: Record<string, (data: K8sObject) => { validate(): void }> = {
  'v1/ConfigMap': (d) => new ConfigMap(d as ConstructorParameters<typeof ConfigMap>[0]),
  'v1/Secret': (d) => new Secret(d as ConstructorParameters<typeof Secret>[0]),
  'v1/Service': (d) => new Service(d as ConstructorParameters<typeof Service>[0]),
  'v1/PersistentVolumeClaim': (d) => new PersistentVolumeClaim(d as ConstructorParameters<typeof PersistentVolumeClaim>[0]),
  'v1/ServiceAccount': (d) => new ServiceAccount(d as ConstructorParameters<typeof ServiceAccount>[0]),
  'v1/Pod': (d) => new Pod(d as ConstructorParameters<typeof Pod>[0]),
  'v1/Namespace': (d) => new Namespace(d as ConstructorParameters<typeof Namespace>[0]),
  'apps/v1/Deployment': (d) => new Deployment(d as ConstructorParameters<typeof Deployment>[0]),
  'apps/v1/StatefulSet': (d) => new StatefulSet(d as ConstructorParameters<typeof StatefulSet>[0]),
  'policy/v1/PodDisruptionBudget': (d) => new PodDisruptionBudget(d as ConstructorParameters<typeof PodDisruptionBudget>[0]),
  'batch/v1/CronJob': (d) => new CronJob(d as ConstructorParameters<typeof CronJob>[0]),
  'networking.k8s.io/v1/Ingress': (d) => new Ingress(d as ConstructorParameters<typeof Ingress>[0]),
  'autoscaling/v2/HorizontalPodAutoscaler': (d) => new HorizontalPodAutoscaler(d as ConstructorParameters<typeof HorizontalPodAutoscaler>[0]),
};

/** Validates one object against its Kubernetes schema; returns the error text, or null when valid. */
export function schemaErrors(o: K8sObject): string | null {
  const model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!model) return `${idOf(o)}: kind not known to the test (add its kubernetes-models class)`;
  // The models copy the data; validate a deep copy so nothing is shared with the build.
  const copy = JSON.parse(JSON.stringify(o)) as K8sObject;
  try {
    model(copy).validate();
    return null;
  } catch (err) {
    return `${idOf(o)}: ${(err as Error).message}`;
  }
}

type Map = Record<string, unknown>;

function get(o: unknown, ...path: string[]): unknown {
  let cur = o;
  for (const p of path) {
    if (!isMap(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

function list(v: unknown): Map[] {
  return Array.isArray(v) ? v.filter(isMap) : [];
}

/** Pod templates of the workloads in a build (CronJobs included), with the workload they belong to. */
export function podTemplates(objects: K8sObject[]): Array<{ owner: K8sObject; template: Map }> {
  const templateOf = (o: K8sObject): unknown =>
    o.kind === 'Pod' ? o : o.kind === 'CronJob' ? get(o, 'spec', 'jobTemplate', 'spec', 'template') : get(o, 'spec', 'template');
  return objects
    .filter((o) => ['Deployment', 'StatefulSet', 'Pod', 'CronJob'].includes(o.kind))
    .map((o) => ({ owner: o, template: templateOf(o) as Map }))
    .filter((x) => isMap(x.template));
}

/** Pod templates of long-running workloads (not CronJobs): the ones with probes, Services and disruption budgets. */
function servingTemplates(objects: K8sObject[]): Array<{ owner: K8sObject; template: Map }> {
  return podTemplates(objects).filter((x) => x.owner.kind !== 'CronJob');
}

/** Resource quantities as numbers (cpu in cores, memory in bytes); enough for comparing requests. */
export function quantity(q: unknown): number {
  if (typeof q === 'number') return q;
  const m = /^(\d+(?:\.\d+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$/.exec(String(q));
  if (!m) return NaN;
  const factor: Record<string, number> = { m: 1e-3, k: 1e3, Ki: 1024, M: 1e6, Mi: 1024 ** 2, G: 1e9, Gi: 1024 ** 3, T: 1e12, Ti: 1024 ** 4 };
  return Number(m[1]) * (m[2] ? (factor[m[2]] ?? NaN) : 1);
}

/** The replica count a scaled workload can go down to: its HPA's minReplicas, else its own replicas. */
export function minReplicas(objects: K8sObject[], workload: K8sObject): number {
  const hpa = objects.find(
    (o) =>
      o.kind === 'HorizontalPodAutoscaler' &&
      get(o, 'spec', 'scaleTargetRef', 'kind') === workload.kind &&
      get(o, 'spec', 'scaleTargetRef', 'name') === workload.metadata.name,
  );
  const fromHpa = hpa ? get(hpa, 'spec', 'minReplicas') : undefined;
  if (typeof fromHpa === 'number') return fromHpa;
  if (hpa) return 1; // the autoscaling/v2 default
  const replicas = get(workload, 'spec', 'replicas');
  return typeof replicas === 'number' ? replicas : 1;
}

/**
 * How many pods a PodDisruptionBudget lets the eviction API remove when `replicas` are healthy
 * (percentages round up, as the disruption controller does).
 */
export function allowedDisruptions(pdb: K8sObject, replicas: number): number {
  const count = (v: unknown): number => (typeof v === 'string' && v.endsWith('%') ? Math.ceil((Number(v.slice(0, -1)) / 100) * replicas) : Number(v));
  const maxUnavailable = get(pdb, 'spec', 'maxUnavailable');
  const minAvailable = get(pdb, 'spec', 'minAvailable');
  if (maxUnavailable !== undefined) return Math.max(0, Math.min(replicas, count(maxUnavailable)));
  if (minAvailable !== undefined) return Math.max(0, replicas - count(minAvailable));
  return 0;
}

function selects(selector: unknown, labels: unknown): boolean {
  const match = get(selector, 'matchLabels');
  if (!isMap(match) || Object.keys(match).length === 0 || !isMap(labels)) return false;
  return Object.entries(match).every(([k, v]) => labels[k] === v);
}

/**
 * The policy points of issue 7 for one built overlay (or any set of objects); returns the violations found:
 * - probes on named ports that exist on the container; berth's readiness on /readyz, liveness on /healthz;
 * - runAsNonRoot with a numeric runAsUser, readOnlyRootFilesystem, and /tmp on an emptyDir for berth;
 * - cpu and memory requests on every container, and requests for every resource an HPA scales on;
 * - each PodDisruptionBudget allows a disruption at its workload's minimum replica count;
 * - Services target named ports of the pods they select; volumes, env and pull secrets name objects in the build;
 * and from issue 17:
 * - a pod with `fsGroup` sets `fsGroupChangePolicy: OnRootMismatch` (no recursive chown of a big volume per start);
 * - a ConfigMap a pod mounts is generated with a content-hash name, so a config edit rolls the pods;
 * - a workload an HPA scales sets no `replicas`, and no HPA scales on memory (Node does not give memory back);
 * - CronJobs never run concurrently.
 */
export function policyViolations(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  const has = (kind: string, name: unknown): boolean => objects.some((o) => o.kind === kind && o.metadata.name === name);

  for (const { owner, template } of podTemplates(objects)) {
    const where = idOf(owner);
    const pod = (get(template, 'spec') ?? {}) as Map;
    const podSec = (pod.securityContext ?? {}) as Map;
    const containers = [...list(pod.initContainers), ...list(pod.containers)];
    if (containers.length === 0) problems.push(`${where}: no containers`);
    const volumes = list(pod.volumes);
    const claimTemplates =
      owner.kind === 'StatefulSet' ? list(get(owner, 'spec', 'volumeClaimTemplates')).map((v) => get(v, 'metadata', 'name')) : [];
    const serving = owner.kind !== 'CronJob';
    if (podSec.fsGroup !== undefined && podSec.fsGroupChangePolicy !== 'OnRootMismatch') {
      problems.push(`${where}: fsGroup without fsGroupChangePolicy: OnRootMismatch changes every file's group at each start`);
    }
    if (owner.kind === 'CronJob' && get(owner, 'spec', 'concurrencyPolicy') !== 'Forbid') problems.push(`${where}: concurrencyPolicy must be Forbid`);
    for (const c of containers) {
      const cw = `${where} container ${String(c.name)}`;
      const sec = (c.securityContext ?? {}) as Map;
      const nonRoot = sec.runAsNonRoot ?? podSec.runAsNonRoot;
      const user = sec.runAsUser ?? podSec.runAsUser;
      if (nonRoot !== true) problems.push(`${cw}: runAsNonRoot must be true`);
      if (typeof user !== 'number' || !Number.isInteger(user) || user <= 0) {
        problems.push(`${cw}: runAsUser must be a numeric non-root uid (runAsNonRoot cannot check a user name)`);
      }
      if (sec.readOnlyRootFilesystem !== true) problems.push(`${cw}: readOnlyRootFilesystem must be true`);
      if (sec.allowPrivilegeEscalation !== false) problems.push(`${cw}: allowPrivilegeEscalation must be false`);
      const requests = get(c, 'resources', 'requests');
      for (const r of ['cpu', 'memory']) {
        if (!isMap(requests) || !(quantity(requests[r]) > 0)) problems.push(`${cw}: resources.requests.${r} is required`);
      }
      const portNames = new Set(
        list(c.ports)
          .map((p) => p.name)
          .filter((n) => typeof n === 'string'),
      );
      for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        const p = get(c, probe);
        if (p === undefined) continue;
        const port = get(p, 'httpGet', 'port') ?? get(p, 'tcpSocket', 'port') ?? get(p, 'grpc', 'port');
        if (typeof port !== 'string') problems.push(`${cw}: ${probe} must use a named port, got ${JSON.stringify(port)}`);
        else if (!portNames.has(port)) problems.push(`${cw}: ${probe} port ${port} is not a port of the container`);
      }
      if (serving && get(c, 'readinessProbe') === undefined) problems.push(`${cw}: readinessProbe is required`);
      if (serving && get(c, 'livenessProbe') === undefined) problems.push(`${cw}: livenessProbe is required`);
      for (const m of list(c.volumeMounts)) {
        if (!volumes.some((v) => v.name === m.name) && !claimTemplates.includes(m.name))
          problems.push(`${cw}: mounts volume ${String(m.name)} the pod does not have`);
      }
      for (const e of list(c.env)) {
        const ref = get(e, 'valueFrom', 'secretKeyRef');
        if (isMap(ref) && ref.optional !== true) {
          const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === ref.name);
          const keys = secret ? [...Object.keys((secret.data ?? {}) as Map), ...Object.keys((secret.stringData ?? {}) as Map)] : [];
          if (!secret) problems.push(`${cw}: env ${String(e.name)} names Secret ${String(ref.name)}, not in the build`);
          else if (!keys.includes(String(ref.key)))
            problems.push(`${cw}: env ${String(e.name)}: Secret ${String(ref.name)} has no key ${String(ref.key)}`);
        }
      }
      if (c.name === 'berth') {
        if (get(c, 'readinessProbe', 'httpGet', 'path') !== '/readyz') problems.push(`${cw}: readinessProbe must GET /readyz`);
        if (get(c, 'livenessProbe', 'httpGet', 'path') !== '/healthz') problems.push(`${cw}: livenessProbe must GET /healthz`);
        const tmp = list(c.volumeMounts).find((m) => m.mountPath === '/tmp');
        const tmpVolume = tmp && volumes.find((v) => v.name === tmp.name);
        if (!tmpVolume || !isMap(tmpVolume.emptyDir)) problems.push(`${cw}: /tmp must be an emptyDir (the root filesystem is read-only)`);
      }
    }
    for (const v of volumes) {
      const cm = get(v, 'configMap', 'name');
      const secret = get(v, 'secret', 'secretName');
      const claim = get(v, 'persistentVolumeClaim', 'claimName');
      if (cm !== undefined && !has('ConfigMap', cm))
        problems.push(`${where}: volume ${String(v.name)} names ConfigMap ${String(cm)}, not in the build`);
      const configMap = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === cm);
      if (configMap && !String(cm).endsWith(`-${configMapHash((configMap.data ?? {}) as Record<string, string>)}`)) {
        problems.push(
          `${where}: volume ${String(v.name)} mounts ConfigMap ${String(cm)} without a content hash in its name (use configMapGenerator, so config edits roll the pods)`,
        );
      }
      if (secret !== undefined && !has('Secret', secret))
        problems.push(`${where}: volume ${String(v.name)} names Secret ${String(secret)}, not in the build`);
      if (claim !== undefined && !has('PersistentVolumeClaim', claim))
        problems.push(`${where}: volume ${String(v.name)} names PVC ${String(claim)}, not in the build`);
    }
  }

  for (const hpa of objects.filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
    const ref = get(hpa, 'spec', 'scaleTargetRef');
    const target = objects.find((o) => o.kind === get(ref, 'kind') && o.metadata.name === get(ref, 'name'));
    if (!target) {
      problems.push(`${idOf(hpa)}: scale target ${String(get(ref, 'kind'))}/${String(get(ref, 'name'))} is not in the build`);
      continue;
    }
    if (get(target, 'spec', 'replicas') !== undefined) {
      problems.push(`${idOf(target)}: sets replicas while ${idOf(hpa)} scales it (every apply would reset the count)`);
    }
    const min = get(hpa, 'spec', 'minReplicas');
    const max = get(hpa, 'spec', 'maxReplicas');
    if (typeof min === 'number' && typeof max === 'number' && min > max) problems.push(`${idOf(hpa)}: minReplicas > maxReplicas`);
    const containers = list(get(target, 'spec', 'template', 'spec', 'containers'));
    for (const metric of list(get(hpa, 'spec', 'metrics'))) {
      const resource = metric.type === 'Resource' ? get(metric, 'resource', 'name') : get(metric, 'containerResource', 'name');
      if (typeof resource !== 'string') continue;
      if (resource === 'memory') problems.push(`${idOf(hpa)}: scales on memory, which a Node process does not give back: it would never scale in`);
      for (const c of containers) {
        if (!(quantity(get(c, 'resources', 'requests', resource)) > 0)) {
          problems.push(`${idOf(hpa)}: scales on ${resource}, but container ${String(c.name)} of ${idOf(target)} requests no ${resource}`);
        }
      }
    }
  }

  for (const pdb of objects.filter((o) => o.kind === 'PodDisruptionBudget')) {
    const owners = servingTemplates(objects).filter(
      (x) => x.owner.kind !== 'Pod' && selects(get(pdb, 'spec', 'selector'), get(x.template, 'metadata', 'labels')),
    );
    if (owners.length === 0) {
      problems.push(`${idOf(pdb)}: selects no workload in the build`);
      continue;
    }
    for (const { owner } of owners) {
      const min = minReplicas(objects, owner);
      if (allowedDisruptions(pdb, min) < 1) {
        problems.push(`${idOf(pdb)}: allows no disruption at ${idOf(owner)}'s minimum of ${min} replica(s); node drains would hang`);
      }
    }
  }

  for (const svc of objects.filter((o) => o.kind === 'Service')) {
    const pods = servingTemplates(objects).filter((x) =>
      selects({ matchLabels: get(svc, 'spec', 'selector') }, get(x.template, 'metadata', 'labels')),
    );
    if (pods.length === 0) problems.push(`${idOf(svc)}: selects no pods in the build`);
    for (const port of list(get(svc, 'spec', 'ports'))) {
      const target = port.targetPort;
      if (typeof target !== 'string') {
        problems.push(`${idOf(svc)}: port ${String(port.port)} should target a named port`);
        continue;
      }
      for (const { owner, template } of pods) {
        const names = list(get(template, 'spec', 'containers')).flatMap((c) => list(c.ports).map((p) => p.name));
        if (!names.includes(target)) problems.push(`${idOf(svc)}: targetPort ${target} is not a port of ${idOf(owner)}`);
      }
    }
  }

  for (const sa of objects.filter((o) => o.kind === 'ServiceAccount' || o.kind === 'Pod')) {
    const refs = sa.kind === 'Pod' ? list(get(sa, 'spec', 'imagePullSecrets')) : list(sa.imagePullSecrets);
    for (const r of refs) if (!has('Secret', r.name)) problems.push(`${idOf(sa)}: imagePullSecret ${String(r.name)} not in the build`);
  }
  return problems;
}
