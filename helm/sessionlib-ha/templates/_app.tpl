{{/*
The two sample services (gateway, cart) are deployed alike: the objects are written once here
and each component's template file calls them with (dict "root" $ "component" "gateway").
*/}}

{{- define "sessionlib-ha.app.fullname" -}}
{{- printf "%s-%s" (include "sessionlib-ha.fullname" .root) .component }}
{{- end }}

{{/* The port each image's command listens on (services/Dockerfile, DESIGN §4). */}}
{{- define "sessionlib-ha.app.containerPort" -}}
{{- get (dict "gateway" 8080 "cart" 8081) .component }}
{{- end }}

{{/* The cart as the gateway calls it: the Service, by its name within the namespace. */}}
{{- define "sessionlib-ha.cart.url" -}}
{{- printf "http://%s:%d" (include "sessionlib-ha.app.fullname" (dict "root" . "component" "cart")) (int .Values.cart.service.port) }}
{{- end }}

{{/* The sessionlib settings both services get: Sentinel or Cluster, passwords, TLS, shared knobs. */}}
{{- define "sessionlib-ha.app.sessionlibEnv" -}}
{{- $tlsDir := include "sessionlib-ha.tls.dir" . }}
{{- $cluster := include "sessionlib-ha.redis.isCluster" . }}
- name: SESSIONLIB_PROFILE
  value: {{ .Values.sessionlib.profile | quote }}
{{- if $cluster }}
- name: SESSIONLIB_REDIS__MODE
  value: cluster
# Every cluster node by its pod name: any one that answers hands out the slot map, which
# names the nodes by their pod names too (cluster-preferred-endpoint-type hostname).
- name: SESSIONLIB_REDIS__CLUSTER_NODES
  value: {{ include "sessionlib-ha.redis.addresses" . | quote }}
{{- else }}
- name: SESSIONLIB_REDIS__MODE
  value: sentinel
# Every sentinel by its pod name: sessionlib watches each of them for +switch-master.
- name: SESSIONLIB_REDIS__SENTINELS
  value: {{ include "sessionlib-ha.sentinel.addresses" . | quote }}
- name: SESSIONLIB_REDIS__MASTER_NAME
  value: {{ .Values.sentinel.masterName | quote }}
{{- end }}
{{- if .Values.auth.enabled }}
{{- /* The sessionlib ACL user, on the nodes (its key prefix, its commands) and on the
       sentinels (discovery and +switch-master only). */}}
- name: SESSIONLIB_REDIS__USERNAME
  value: sessionlib
{{ include "sessionlib-ha.auth.passwordEnv" (dict "root" . "user" "sessionlib" "name" "SESSIONLIB_REDIS__PASSWORD") }}
{{- if not $cluster }}
- name: SESSIONLIB_REDIS__SENTINEL_USERNAME
  value: sessionlib
{{ include "sessionlib-ha.auth.passwordEnv" (dict "root" . "user" "sessionlib" "name" "SESSIONLIB_REDIS__SENTINEL_PASSWORD") }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: SESSIONLIB_REDIS__TLS__ENABLED
  value: "true"
- name: SESSIONLIB_REDIS__TLS__CA_FILE
  value: {{ printf "%s/ca.crt" $tlsDir }}
{{- if ne .Values.tls.authClients "no" }}
- name: SESSIONLIB_REDIS__TLS__CERT_FILE
  value: {{ printf "%s/tls.crt" $tlsDir }}
- name: SESSIONLIB_REDIS__TLS__KEY_FILE
  value: {{ printf "%s/tls.key" $tlsDir }}
{{- end }}
{{- else }}
{{- /* prod refuses plaintext Redis unless allowed on purpose: tls.enabled=false is that choice. */}}
- name: SESSIONLIB_REDIS__TLS__ALLOW_PLAINTEXT
  value: "true"
{{- end }}
{{- include "sessionlib-ha.settingsEnv" (dict "prefix" "SESSIONLIB_REDIS" "settings" .Values.sessionlib.redis) }}
{{- include "sessionlib-ha.settingsEnv" (dict "prefix" "SESSIONLIB_SESSION" "settings" .Values.sessionlib.session) }}
{{- with .Values.sessionlib.signingKeys.existingSecret }}
- name: SESSIONLIB_SESSION__SIGNING_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.sessionlib.signingKeys.key }}
{{- end }}
{{- end }}

{{- define "sessionlib-ha.app.deployment" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- $labels := dict "root" $root "component" .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sessionlib-ha.app.fullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sessionlib-ha.labels" $labels | nindent 4 }}
spec:
  replicas: {{ $values.replicas }}
  # A new pod is ready before an old one goes: no capacity dip during a rollout.
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "sessionlib-ha.selectorLabels" $labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "sessionlib-ha.labels" $labels | nindent 8 }}
        {{- with $values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $annotations := include "sessionlib-ha.tls.checksumAnnotation" $root | fromYaml | default dict }}
      {{- /* The services read the sessionlib password at start only: roll when it changes. */}}
      {{- $auth := include "sessionlib-ha.auth.checksumAnnotation" (dict "root" $root "users" (list "sessionlib")) | fromYaml | default dict }}
      {{- $annotations = merge $annotations $auth }}
      {{- $keys := include "sessionlib-ha.signingKeys.checksumAnnotation" $root | fromYaml | default dict }}
      {{- $annotations = merge $annotations $keys }}
      {{- $annotations = merge $annotations ($values.podAnnotations | default dict) }}
      {{- with $annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "sessionlib-ha.serviceAccountName" $root }}
      automountServiceAccountToken: false
      # No <SERVICE>_PORT variables: settings come from SESSIONLIB_* and GATEWAY_* only.
      enableServiceLinks: false
      {{- with (include "sessionlib-ha.imagePullSecrets" $root | trim) }}{{ . | nindent 6 }}{{ end }}
      securityContext:
        {{- toYaml $values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      {{- with (include "sessionlib-ha.scheduling" (dict "root" $root "component" .component "values" $values) | trim) }}{{ . | nindent 6 }}{{ end }}
      containers:
        - name: {{ .component }}
          image: {{ include "sessionlib-ha.image" (dict "root" $root "image" $values.image) }}
          imagePullPolicy: {{ $values.image.pullPolicy }}
          securityContext:
            {{- toYaml $values.containerSecurityContext | nindent 12 }}
          env:
            {{- include "sessionlib-ha.app.sessionlibEnv" $root | trim | nindent 12 }}
            {{- if eq .component "gateway" }}
            - name: GATEWAY_CART_URL
              value: {{ include "sessionlib-ha.cart.url" $root | quote }}
            - name: GATEWAY_DOWNSTREAM_TIMEOUT_SECONDS
              value: {{ $values.downstreamTimeoutSeconds | quote }}
            {{- end }}
            {{- with $values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ include "sessionlib-ha.app.containerPort" . }}
              protocol: TCP
          startupProbe:
            {{- include "sessionlib-ha.probe" (dict "handler" (dict "httpGet" (dict "path" "/healthz" "port" "http")) "timings" $values.startupProbe) | nindent 12 }}
          livenessProbe:
            {{- include "sessionlib-ha.probe" (dict "handler" (dict "httpGet" (dict "path" "/healthz" "port" "http")) "timings" $values.livenessProbe) | nindent 12 }}
          readinessProbe:
            {{- include "sessionlib-ha.probe" (dict "handler" (dict "httpGet" (dict "path" "/readyz" "port" "http")) "timings" $values.readinessProbe) | nindent 12 }}
          {{- if $values.preStopSleepSeconds }}
          lifecycle:
            preStop:
              exec:
                # Keep serving while the endpoint removal reaches every load balancer.
                command:
                  - sleep
                  - {{ $values.preStopSleepSeconds | quote }}
          {{- end }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.tls.enabled }}
            - name: tls
              mountPath: {{ include "sessionlib-ha.tls.dir" $root }}
              readOnly: true
            {{- end }}
      volumes:
        # The root file system is read-only; Python and uvicorn may still want a scratch dir.
        - name: tmp
          emptyDir:
            medium: Memory
            sizeLimit: 16Mi
        {{- if $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ $root.Values.tls.existingSecret }}
            defaultMode: 0440
        {{- end }}
{{- end }}

{{- define "sessionlib-ha.app.service" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- $labels := dict "root" $root "component" .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "sessionlib-ha.app.fullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sessionlib-ha.labels" $labels | nindent 4 }}
  {{- with $values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $values.service.type }}
  selector:
    {{- include "sessionlib-ha.selectorLabels" $labels | nindent 4 }}
  ports:
    - name: http
      port: {{ $values.service.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{- define "sessionlib-ha.app.pdb" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- if $values.pdb.enabled }}
{{- $labels := dict "root" $root "component" .component }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "sessionlib-ha.app.fullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sessionlib-ha.labels" $labels | nindent 4 }}
spec:
  # maxUnavailable rather than minAvailable: with replicas 1 a minAvailable of 1 would block
  # every node drain for good.
  maxUnavailable: {{ $values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "sessionlib-ha.selectorLabels" $labels | nindent 6 }}
{{- end }}
{{- end }}

{{- define "sessionlib-ha.app.serviceMonitor" -}}
{{- $root := .root }}
{{- if $root.Values.metrics.serviceMonitor.enabled }}
{{- $monitor := $root.Values.metrics.serviceMonitor }}
{{- $labels := dict "root" $root "component" .component }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "sessionlib-ha.app.fullname" . }}
  namespace: {{ $monitor.namespace | default $root.Release.Namespace }}
  labels:
    {{- include "sessionlib-ha.labels" $labels | nindent 4 }}
    {{- with $monitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  namespaceSelector:
    matchNames:
      - {{ $root.Release.Namespace }}
  selector:
    matchLabels:
      {{- include "sessionlib-ha.selectorLabels" $labels | nindent 6 }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $monitor.interval }}
      scrapeTimeout: {{ $monitor.scrapeTimeout }}
      relabelings:
        - action: replace
          targetLabel: job
          replacement: {{ index $monitor.jobNames .component }}
{{- end }}
{{- end }}
