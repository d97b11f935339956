{{/*
Names, labels, images and the derived numbers (quorum, disruption budget) every template
shares. Anything computed from several values lives here once, so the StatefulSet, the
services' settings and NOTES.txt can never disagree about it.
*/}}

{{- define "sessionlib-ha.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
"<release>-<chart>", or the release name alone when it already contains the chart name.
Truncated so "<fullname>-redis" stays within the 52 characters a StatefulSet name may have
(its pods get a 63-character controller-revision-hash label built from it).
*/}}
{{- define "sessionlib-ha.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sessionlib-ha.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "redis"). */}}
{{- define "sessionlib-ha.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sessionlib-ha.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of one component's objects: call with (dict "root" $ "component" "redis"). */}}
{{- define "sessionlib-ha.labels" -}}
helm.sh/chart: {{ include "sessionlib-ha.chart" .root }}
{{ include "sessionlib-ha.selectorLabels" . }}
app.kubernetes.io/part-of: sessionlib
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sessionlib-ha.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sessionlib-ha.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {registry, repository, tag, digest}: call with
(dict "root" $ "image" .Values.redis.image). global.imageRegistry wins over the image's own
registry; a digest wins over the tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "sessionlib-ha.image" -}}
{{- $registry := .root.Values.global.imageRegistry | default .image.registry }}
{{- $name := .image.repository }}
{{- if $registry }}
{{- $name = printf "%s/%s" $registry .image.repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $name .image.digest }}
{{- else }}
{{- printf "%s:%s" $name (.image.tag | default .root.Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{- define "sessionlib-ha.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* --- Redis and Sentinel ----------------------------------------------------------- */}}

{{- define "sessionlib-ha.redis.fullname" -}}
{{- printf "%s-redis" (include "sessionlib-ha.fullname" .) }}
{{- end }}

{{/*
The headless Service that gives every Redis pod its stable DNS name, which Redis and
Sentinel announce (see service-redis.yaml for why names rather than per-pod Services).
*/}}
{{- define "sessionlib-ha.redis.headless" -}}
{{- printf "%s-redis-headless" (include "sessionlib-ha.fullname" .) }}
{{- end }}

{{- define "sessionlib-ha.redis.domain" -}}
{{- printf "%s.%s.svc.%s" (include "sessionlib-ha.redis.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* The stable DNS name of Redis pod number .index: call with (dict "root" $ "index" 0). */}}
{{- define "sessionlib-ha.redis.podHost" -}}
{{- printf "%s-%d.%s" (include "sessionlib-ha.redis.fullname" .root) (int .index) (include "sessionlib-ha.redis.domain" .root) }}
{{- end }}

{{/* Every sentinel as host:port, in pod order, as a list (join or toJson it). */}}
{{- define "sessionlib-ha.sentinel.addresses" -}}
{{- $addresses := list }}
{{- range $index := until (int .Values.redis.replicas) }}
{{- $host := include "sessionlib-ha.redis.podHost" (dict "root" $ "index" $index) }}
{{- $addresses = append $addresses (printf "%s:%d" $host (int $.Values.sentinel.port)) }}
{{- end }}
{{- toJson $addresses }}
{{- end }}

{{/* Whether the nodes form a Redis Cluster (redis.mode cluster): "true" or empty. */}}
{{- define "sessionlib-ha.redis.isCluster" -}}
{{- if eq .Values.redis.mode "cluster" }}true{{ end }}
{{- end }}

{{/*
The Redis pods of the StatefulSet: redis.replicas with Sentinel; with Redis Cluster, every
shard's master and its replicas. Pod N is in shard N / (1 + replicasPerShard).
*/}}
{{- define "sessionlib-ha.redis.nodeCount" -}}
{{- if include "sessionlib-ha.redis.isCluster" . }}
{{- mul (int .Values.redis.cluster.shards) (add1 (int .Values.redis.cluster.replicasPerShard)) }}
{{- else }}
{{- int .Values.redis.replicas }}
{{- end }}
{{- end }}

{{/* Every Redis node as host:port, in pod order (a JSON list). */}}
{{- define "sessionlib-ha.redis.addresses" -}}
{{- $addresses := list }}
{{- range $index := until (int (include "sessionlib-ha.redis.nodeCount" .)) }}
{{- $host := include "sessionlib-ha.redis.podHost" (dict "root" $ "index" $index) }}
{{- $addresses = append $addresses (printf "%s:%d" $host (int $.Values.redis.port)) }}
{{- end }}
{{- toJson $addresses }}
{{- end }}

{{/* A majority of the sentinels unless set: 2 of 3, 3 of 5. */}}
{{- define "sessionlib-ha.sentinel.quorum" -}}
{{- if kindIs "invalid" .Values.sentinel.quorum }}
{{- add (div (int .Values.redis.replicas) 2) 1 }}
{{- else }}
{{- int .Values.sentinel.quorum }}
{{- end }}
{{- end }}

{{/* The Sentinel majority unless set: a drain then never takes away failover authority. */}}
{{- define "sessionlib-ha.redis.pdbMinAvailable" -}}
{{- if kindIs "invalid" .Values.redis.pdb.minAvailable }}
{{- add (div (int .Values.redis.replicas) 2) 1 }}
{{- else }}
{{- int .Values.redis.pdb.minAvailable }}
{{- end }}
{{- end }}

{{/* --- Memory --------------------------------------------------------------------------- */}}

{{/*
The bytes of a Kubernetes quantity ("512Mi", "1.5Gi", "500M", 536870912) as an integer; fails
naming the value on a form it does not read. Call with
(dict "quantity" .Values.redis.resources.limits.memory "name" "redis.resources.limits.memory").
*/}}
{{- define "sessionlib-ha.quantityBytes" -}}
{{- $text := toString .quantity }}
{{- if or (kindIs "float64" .quantity) (kindIs "int" .quantity) (kindIs "int64" .quantity) }}
{{- $text = printf "%d" (int64 .quantity) }}
{{- end }}
{{- if not (regexMatch `^[0-9]+(\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$` $text) }}
{{- fail (printf "%s %s: write it as a number with an optional k, M, G, T, Ki, Mi, Gi or Ti suffix" .name $text) }}
{{- end }}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- $number := regexFind `^[0-9.]+` $text }}
{{- $factor := index $factors (trimPrefix $number $text) }}
{{- if contains "." $number }}
{{- mulf (float64 $number) $factor | floor | int64 }}
{{- else }}
{{- mul (int64 $number) $factor }}
{{- end }}
{{- end }}

{{/* The bytes of a size in Redis' units (values.schema.json checks the form): 1k is 1000, 1kb 1024. */}}
{{- define "sessionlib-ha.redisBytes" -}}
{{- $text := lower (toString .) }}
{{- $factors := dict "" 1 "k" 1000 "kb" 1024 "m" 1000000 "mb" 1048576 "g" 1000000000 "gb" 1073741824 }}
{{- $number := regexFind `^[0-9]+` $text }}
{{- mul (int64 $number) (index $factors (trimPrefix $number $text)) }}
{{- end }}

{{/* A byte count as redis.conf reads it, in mb or kb when it divides evenly. */}}
{{- define "sessionlib-ha.redisSize" -}}
{{- $bytes := int64 . }}
{{- if and (gt $bytes 0) (eq (mod $bytes 1048576) 0) }}
{{- printf "%dmb" (div $bytes 1048576) }}
{{- else if and (gt $bytes 0) (eq (mod $bytes 1024) 0) }}
{{- printf "%dkb" (div $bytes 1024) }}
{{- else }}
{{- printf "%d" $bytes }}
{{- end }}
{{- end }}

{{/*
Redis' memory, all from ONE value, the container's memory limit (values.yaml, redis.maxmemory,
says why): half of it is data (maxmemory, unless redis.maxmemory asks for less), a quarter the
hard limit of the replica output buffer (which maxmemory does not count), half of that its soft
limit, and a quarter stays free for the copy-on-write of a fork. As JSON, in bytes:
{"limit", "maxmemory", "replicaBufferHard", "replicaBufferSoft"}; {} without a memory limit
(validate refuses a redis.maxmemory without one).
*/}}
{{- define "sessionlib-ha.redis.memory" -}}
{{- $limit := dig "limits" "memory" "" (.Values.redis.resources | default dict) }}
{{- if $limit }}
{{- $limitBytes := include "sessionlib-ha.quantityBytes" (dict "quantity" $limit "name" "redis.resources.limits.memory") | int64 }}
{{- $maxmemory := div $limitBytes 2 }}
{{- with .Values.redis.maxmemory }}
{{- $maxmemory = include "sessionlib-ha.redisBytes" . | int64 }}
{{- end }}
{{- $hard := div $limitBytes 4 }}
{{- toJson (dict "limit" $limitBytes "maxmemory" $maxmemory "replicaBufferHard" $hard "replicaBufferSoft" (div $hard 2)) }}
{{- else }}
{{- toJson dict }}
{{- end }}
{{- end }}

{{/*
What the chart appends to the shared redis.conf (the ConfigMap key redis-extra.conf, which the
start script adds after the template): the memory sizes derived above, the eviction policy,
the shutdown timeout that terminationGracePeriodSeconds is checked against, then
redis.extraConfig (later lines win).
*/}}
{{- define "sessionlib-ha.redis.extraConfig" -}}
{{- $memory := include "sessionlib-ha.redis.memory" . | fromJson }}
{{- if $memory }}
# From redis.resources.limits.memory {{ .Values.redis.resources.limits.memory }}: half is data, a quarter the replica output buffer, a quarter free for a fork.
maxmemory {{ include "sessionlib-ha.redisSize" $memory.maxmemory }}
client-output-buffer-limit replica {{ include "sessionlib-ha.redisSize" $memory.replicaBufferHard }} {{ include "sessionlib-ha.redisSize" $memory.replicaBufferSoft }} 60
{{- end }}
maxmemory-policy {{ .Values.redis.maxmemoryPolicy }}
shutdown-timeout {{ int .Values.redis.shutdownTimeoutSeconds }}
{{- with .Values.redis.extraConfig }}
{{ . }}
{{- end }}
{{- end }}

{{/* --- Secrets -------------------------------------------------------------------------- */}}

{{- define "sessionlib-ha.auth.secretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "sessionlib-ha.fullname" .)) }}
{{- end }}

{{/*
The ACL users of the shared templates deploy/redis/users.acl and sentinel-users.acl (DESIGN
§3b), each with one password, the same on every Redis node and Sentinel: admin (operators and
the pod scripts), sessionlib (the services), replica (masteruser), sentinel (auth-user and
sentinel-user) and exporter (redis_exporter). The default user is off.
*/}}
{{- define "sessionlib-ha.auth.users" -}}
{{- toJson (list "admin" "sessionlib" "replica" "sentinel" "exporter") }}
{{- end }}

{{/* The Secret key of one user's password: (dict "root" $ "user" "sessionlib"). */}}
{{- define "sessionlib-ha.auth.key" -}}
{{- if .root.Values.auth.existingSecret }}
{{- index .root.Values.auth.existingSecretKeys .user }}
{{- else }}
{{- printf "%s-password" .user }}
{{- end }}
{{- end }}

{{/* An EnvVar with one user's password from the Secret: (dict "root" $ "user" "sessionlib"
"name" "SESSIONLIB_REDIS__PASSWORD"). */}}
{{- define "sessionlib-ha.auth.passwordEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "sessionlib-ha.auth.secretName" .root }}
      key: {{ include "sessionlib-ha.auth.key" . }}
{{- end }}

{{/*
The auth Secret as the cluster holds it now, the chart's own or auth.existingSecret (found with
lookup at install and upgrade; {} when rendering offline, e.g. helm template or Argo CD).
*/}}
{{- define "sessionlib-ha.auth.clusterData" -}}
{{- (lookup "v1" "Secret" .Release.Namespace (include "sessionlib-ha.auth.secretName" .)).data | default dict | toJson }}
{{- end }}

{{/*
The data of the Secret the chart creates: every user's password the cluster holds already (new
ones would lock every running pod and client out; an upgrade from a chart version with other
users adds the missing keys), a random one for each user without. Letters and digits only:
Sentinel rewrites passwords into its config unquoted. Made once per render and kept in .Values
(every template gets the same .Values), so the Secret and the pods' checksum of it see the same
random passwords.
*/}}
{{- define "sessionlib-ha.auth.generatedData" -}}
{{- if not (hasKey .Values "_generatedAuthData") }}
{{- $current := include "sessionlib-ha.auth.clusterData" . | fromJson }}
{{- $data := dict }}
{{- range $user := include "sessionlib-ha.auth.users" . | fromJsonArray }}
{{- $key := printf "%s-password" $user }}
{{- $_ := set $data $key (index $current $key | default (randAlphaNum 32 | b64enc)) }}
{{- end }}
{{- $_ := set .Values "_generatedAuthData" $data }}
{{- end }}
{{- get .Values "_generatedAuthData" | toJson }}
{{- end }}

{{/*
The pod annotation that rolls pods when a password they read changes (a Secret's values reach
the environment only at container start): a checksum of those users' passwords, from the
Secret the chart creates, or from auth.existingSecret as lookup finds it. Offline renders
cannot see an existingSecret, so there it stays put: roll by hand after changing it. Call with
(dict "root" $ "users" (list "sessionlib")); nothing without auth.
*/}}
{{- define "sessionlib-ha.auth.checksumAnnotation" -}}
{{- if .root.Values.auth.enabled }}
{{- $data := dict }}
{{- if .root.Values.auth.existingSecret }}
{{- $data = include "sessionlib-ha.auth.clusterData" .root | fromJson }}
{{- else }}
{{- $data = include "sessionlib-ha.auth.generatedData" .root | fromJson }}
{{- end }}
{{- $read := dict }}
{{- range $user := .users }}
{{- $key := include "sessionlib-ha.auth.key" (dict "root" $.root "user" $user) }}
{{- $_ := set $read $key (index $data $key) }}
{{- end }}
checksum/auth: {{ toJson $read | sha256sum }}
{{- end }}
{{- end }}

{{/* Where every container finds the TLS Secret's files. */}}
{{- define "sessionlib-ha.tls.dir" -}}
/etc/sessionlib/tls
{{- end }}

{{/*
The TLS Secret's data as the cluster holds it now (found with lookup at install and upgrade;
empty when rendering offline). Its checksum is a pod annotation, so a renewed certificate
rolls the pods at the next `helm upgrade`: Redis and Sentinel read their certificate only at
start.
*/}}
{{- define "sessionlib-ha.tls.secretData" -}}
{{- (lookup "v1" "Secret" .Release.Namespace .Values.tls.existingSecret).data | default dict | toJson }}
{{- end }}

{{/* The pod annotation that carries that checksum, or nothing without TLS. */}}
{{- define "sessionlib-ha.tls.checksumAnnotation" -}}
{{- if .Values.tls.enabled }}
checksum/tls: {{ include "sessionlib-ha.tls.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
The pod annotation that carries a checksum of the signing keys as the cluster holds them now
(found with lookup at install and upgrade; empty offline), or nothing without them. The
services read SESSIONLIB_SESSION__SIGNING_KEYS at start only, so a rotated key list rolls
them at the next `helm upgrade`, and no pod keeps signing with a list the others lack.
*/}}
{{- define "sessionlib-ha.signingKeys.checksumAnnotation" -}}
{{- $keys := .Values.sessionlib.signingKeys }}
{{- if $keys.existingSecret }}
{{- $data := (lookup "v1" "Secret" .Release.Namespace $keys.existingSecret).data | default dict }}
checksum/signing-keys: {{ index $data $keys.key | default "" | sha256sum }}
{{- end }}
{{- end }}

{{/* --- Scheduling ----------------------------------------------------------------------- */}}

{{/*
The affinity block of one component: the user's own when given, else pod anti-affinity
against the component's other pods, preferred ("soft") or required ("hard").
Call with (dict "root" $ "component" "redis" "values" .Values.redis).
*/}}
{{- define "sessionlib-ha.affinity" -}}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if eq .values.antiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: {{ .values.antiAffinityTopologyKey }}
        labelSelector:
          matchLabels:
            {{- include "sessionlib-ha.selectorLabels" . | nindent 12 }}
{{- else if eq .values.antiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: {{ .values.antiAffinityTopologyKey }}
          labelSelector:
            matchLabels:
              {{- include "sessionlib-ha.selectorLabels" . | nindent 14 }}
{{- end }}
{{- end }}

{{/* nodeSelector, tolerations, spread constraints and priority of one component's pods. */}}
{{- define "sessionlib-ha.scheduling" -}}
{{- include "sessionlib-ha.affinity" . }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/*
A probe block from the values' timings and a handler:
(dict "timings" .Values.redis.livenessProbe "handler" (dict "exec" ...)).
*/}}
{{- define "sessionlib-ha.probe" -}}
{{- toYaml (merge (deepCopy .handler) .timings) }}
{{- end }}

{{/* --- sessionlib settings ---------------------------------------------------------------- */}}

{{/*
sessionlib settings as environment variables: a nested map becomes
SESSIONLIB_<SECTION>__<KEY>[__<KEY>...], lists become JSON (what pydantic-settings parses).
Call with (dict "prefix" "SESSIONLIB_SESSION" "settings" .Values.sessionlib.session).
*/}}
{{- define "sessionlib-ha.settingsEnv" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .settings }}
{{- $name := printf "%s__%s" $prefix ($key | upper) }}
{{- if kindIs "map" $value }}
{{ include "sessionlib-ha.settingsEnv" (dict "prefix" $name "settings" $value) }}
{{- else if kindIs "slice" $value }}
- name: {{ $name }}
  value: {{ toJson $value | quote }}
{{- else if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Values that are each valid but wrong together: refused at render time with a message that
names the setting, instead of a cluster that never becomes ready.
*/}}
{{- define "sessionlib-ha.validate" -}}
{{- if include "sessionlib-ha.redis.isCluster" . }}
{{- include "sessionlib-ha.validateCluster" . }}
{{- else }}
{{- /* Sentinel mode: quorum, write safety and the budget against redis.replicas. */}}
{{- $replicas := int .Values.redis.replicas }}
{{- $quorum := int (include "sessionlib-ha.sentinel.quorum" .) }}
{{- if gt $quorum $replicas }}
{{- fail (printf "sentinel.quorum %d is more than there are sentinels (redis.replicas %d): no failover could ever start" $quorum $replicas) }}
{{- end }}
{{- if ge (int .Values.redis.minReplicasToWrite) $replicas }}
{{- fail (printf "redis.minReplicasToWrite %d needs more than %d Redis nodes (redis.replicas): the master would refuse every write" (int .Values.redis.minReplicasToWrite) $replicas) }}
{{- end }}
{{- if .Values.redis.pdb.enabled }}
{{- $minAvailable := int (include "sessionlib-ha.redis.pdbMinAvailable" .) }}
{{- if ge $minAvailable $replicas }}
{{- fail (printf "redis.pdb.minAvailable %d must be below redis.replicas %d, or no node could ever be drained" $minAvailable $replicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq .Values.sessionlib.profile "prod") (not .Values.auth.enabled) }}
{{- fail "sessionlib.profile prod refuses Redis and Sentinel without passwords: set auth.enabled true (or use profile dev)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- $memory := include "sessionlib-ha.redis.memory" . | fromJson }}
{{- if and .Values.redis.maxmemory (not $memory) }}
{{- fail (printf "redis.maxmemory %s needs redis.resources.limits.memory: the room beside the data (replica output buffer, a fork's copy-on-write) is sized from that limit" .Values.redis.maxmemory) }}
{{- end }}
{{- if $memory }}
{{- $half := div (int64 $memory.limit) 2 }}
{{- if gt (int64 $memory.maxmemory) $half }}
{{- fail (printf "redis.maxmemory %s is more than half of redis.resources.limits.memory %s: the other half holds the replica output buffer (a quarter) and a fork's copy-on-write (a quarter), or Redis is OOM-killed during an AOF rewrite or a full sync. Set redis.maxmemory to %s or less, or leave it empty, or raise the limit" .Values.redis.maxmemory (toString .Values.redis.resources.limits.memory) (include "sessionlib-ha.redisSize" $half)) }}
{{- end }}
{{- end }}
{{- if regexMatch `(?m)^\s*(maxmemory|client-output-buffer-limit\s+(replica|slave)|shutdown-timeout)\s` .Values.redis.extraConfig }}
{{- fail "redis.extraConfig may not set maxmemory, client-output-buffer-limit replica or shutdown-timeout: they follow from redis.resources.limits.memory, redis.maxmemory and redis.shutdownTimeoutSeconds, which the chart checks against each other" }}
{{- end }}
{{- /* Stopping a Redis pod: both preStop hooks side by side (the Redis one hands the master
       role over, the Sentinel one waits for that, each up to preStopTimeoutSeconds), then
       Redis' shutdown (shutdown-timeout), plus a margin for the hook's redis-cli calls outside
       its deadline (3 s timeout each) and the final AOF fsync. */}}
{{- $stopMargin := 10 }}
{{- $stopTakes := add .Values.redis.preStopTimeoutSeconds .Values.redis.shutdownTimeoutSeconds $stopMargin }}
{{- /* A cold start keeps the sentinels waiting for the election, which waits up to
       coldStartWaitSeconds for every node: the startup probe must outlast that. */}}
{{- $sentinelStartup := mul (int .Values.sentinel.startupProbe.periodSeconds) (int .Values.sentinel.startupProbe.failureThreshold) }}
{{- if and (not (include "sessionlib-ha.redis.isCluster" .)) (le (int $sentinelStartup) (mul 2 (int .Values.redis.coldStartWaitSeconds))) }}
{{- fail (printf "sentinel.startupProbe allows %d s (periodSeconds x failureThreshold), not more than twice redis.coldStartWaitSeconds %d: on a cold start a Sentinel waits for the Redis nodes' election, which waits that long for every node, and would be restarted in the middle of it" (int $sentinelStartup) (int .Values.redis.coldStartWaitSeconds)) }}
{{- end }}
{{- if lt (int .Values.redis.terminationGracePeriodSeconds) (int $stopTakes) }}
{{- fail (printf "redis.terminationGracePeriodSeconds %d is shorter than stopping a Redis pod may take: redis.preStopTimeoutSeconds %d (the Redis and Sentinel preStop hooks, side by side) + redis.shutdownTimeoutSeconds %d + %d s for the hook's last redis-cli calls and the AOF fsync = %d. Kubernetes would kill Redis in the middle of its hand-over or shutdown" (int .Values.redis.terminationGracePeriodSeconds) (int .Values.redis.preStopTimeoutSeconds) (int .Values.redis.shutdownTimeoutSeconds) $stopMargin (int $stopTakes)) }}
{{- end }}
{{- end }}

{{/*
What only Redis Cluster mode can get wrong, refused by name like the rest of validate.
Scale-in: a `helm upgrade` to fewer shards than the running StatefulSet has would delete the
highest pods with whatever slots they still serve. The StatefulSet is looked up (at install and
upgrade; offline renders find none and cannot check), and fewer pods are refused unless
redis.cluster.allowScaleIn says the shards that go were drained first.
*/}}
{{- define "sessionlib-ha.validateCluster" -}}
{{- $cluster := .Values.redis.cluster }}
{{- if gt (int .Values.redis.minReplicasToWrite) (int $cluster.replicasPerShard) }}
{{- fail (printf "redis.minReplicasToWrite %d needs at least as many replicas per shard (redis.cluster.replicasPerShard %d): every master would refuse every write" (int .Values.redis.minReplicasToWrite) (int $cluster.replicasPerShard)) }}
{{- end }}
{{- if .Values.haproxy.enabled }}
{{- fail "haproxy.enabled is a master endpoint for Sentinel mode: a Redis Cluster has one master per shard, and its clients (sessionlib in mode cluster) follow the slots themselves. Turn haproxy.enabled off with redis.mode cluster" }}
{{- end }}
{{- $wanted := int (include "sessionlib-ha.redis.nodeCount" .) }}
{{- $running := include "sessionlib-ha.redis.runningPods" . | int }}
{{- if and (lt $wanted $running) (not $cluster.allowScaleIn) }}
{{- fail (printf "redis.cluster.shards %d would remove %d of the %d running cluster pods, and with them the slots (sessions) they serve. Move the slots off first: kubectl exec %s-0 -c redis -- sh /opt/sessionlib/scripts/cluster-drain.sh %d; then upgrade with redis.cluster.allowScaleIn=true (and set it back afterwards). See the chart README, \"Redis Cluster mode\"" (int $cluster.shards) (sub $running $wanted) $running (include "sessionlib-ha.redis.fullname" .) (int $cluster.shards)) }}
{{- end }}
{{- end }}

{{/* The replicas of the installed Redis StatefulSet (0 when there is none, or offline). */}}
{{- define "sessionlib-ha.redis.runningPods" -}}
{{- (lookup "apps/v1" "StatefulSet" .Release.Namespace (include "sessionlib-ha.redis.fullname" .)).spec | default dict | dig "replicas" 0 }}
{{- end }}
