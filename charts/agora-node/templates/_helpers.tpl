{{/* The chart name, shortened to Kubernetes' 63-character label limit. */}}
{{- define "agora-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object it creates. */}}
{{- define "agora-node.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "agora-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agora-node.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agora-node.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agora-node.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/part-of: agora
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "agora-node.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agora-node.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the node key: the owner's, or the one this chart generates. */}}
{{- define "agora-node.keySecretName" -}}
{{- default (printf "%s-key" (include "agora-node.fullname" .)) .Values.nodeKey.existingSecret }}
{{- end }}

{{- define "agora-node.caConfigMapName" -}}
{{- default (printf "%s-hub-ca" (include "agora-node.fullname" .)) .Values.hub.caExistingConfigMap }}
{{- end }}

{{- define "agora-node.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Whether the pod needs the Kubernetes API (the kubernetes executor). */}}
{{- define "agora-node.usesKubernetesExecutor" -}}
{{- if has "kubernetes" .Values.executors }}true{{ end }}
{{- end }}

{{/* Checks between values that values.schema.json cannot express, each naming the value to fix. */}}
{{- define "agora-node.validate" -}}
{{- if not .Values.hub.url }}
{{- fail "hub.url is required: the hub's base URL, e.g. --set hub.url=https://hub.example.org:7600" }}
{{- end }}
{{- if not .Values.region }}
{{- fail "region is required: the nodes' region, e.g. --set region=eu-west" }}
{{- end }}
{{- if and (include "agora-node.usesKubernetesExecutor" .) (not .Values.rbac.kubernetesExecutor) }}
{{- fail "executors contains \"kubernetes\" but rbac.kubernetesExecutor is false: the kubernetes executor needs its RBAC to create job pods; set rbac.kubernetesExecutor=true" }}
{{- end }}
{{- if and .Values.rbac.kubernetesExecutor (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "rbac.kubernetesExecutor needs a service account of the agent's own: set serviceAccount.create=true or serviceAccount.name" }}
{{- end }}
{{- if and .Values.probe.enabled (not .Values.probe.address) }}
{{- fail "probe.enabled needs probe.address: host:port where peers reach this node's probe port (e.g. 203.0.113.7:7601)" }}
{{- end }}
{{- if and .Values.livenessProbe.enabled (not .Values.metrics.enabled) }}
{{- fail "livenessProbe.enabled checks the metrics endpoint: set metrics.enabled=true or livenessProbe.enabled=false" }}
{{- end }}
{{- if and (or .Values.metrics.service.enabled .Values.metrics.podMonitor.enabled) (not .Values.metrics.enabled) }}
{{- fail "metrics.service.enabled and metrics.podMonitor.enabled need metrics.enabled=true" }}
{{- end }}
{{- if and (eq .Values.nodeKey.mode "perNode") .Values.nodeKey.existingSecret }}
{{- fail "nodeKey.existingSecret is for nodeKey.mode=secret; with nodeKey.mode=perNode every node creates its own key in state.hostPath" }}
{{- end }}
{{- if and (eq .Values.nodeKey.mode "perNode") (ne .Values.state.type "hostPath") }}
{{- fail "nodeKey.mode=perNode keeps each node's key in the state directory, which must then be state.type=hostPath: an emptyDir would lose the key, and with it the node's name, on every restart" }}
{{- end }}
{{- end }}
