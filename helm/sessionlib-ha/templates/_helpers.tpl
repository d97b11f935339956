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
{{- if and (eq .Values.sessionlib.profile "prod") (not .Values.auth.enabled) }}
{{- fail "sessionlib.profile prod refuses Redis and Sentinel without passwords: set auth.enabled true (or use profile dev)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- end }}
