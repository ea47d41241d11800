{{/* Names: <release>-shoal unless the release name already contains the chart name. */}}
{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Component names are fullname-<component>, kept within the 63-character DNS label limit. */}}
{{- define "shoal.componentName" -}}
{{- printf "%s-%s" (include "shoal.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shoal
{{ include "shoal.selectorLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Pod labels of the agent DaemonSet; the controller's --agent-selector is built from exactly these. */}}
{{- define "shoal.agent.selectorLabels" -}}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "shoal.controller.selectorLabels" -}}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* `k=v,k=v` label selector over the agent's pod labels, sorted so the rendering is stable. */}}
{{- define "shoal.agent.selector" -}}
{{- $labels := include "shoal.agent.selectorLabels" . | fromYaml -}}
{{- $pairs := list -}}
{{- range $key := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (get $labels $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "shoal.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "shoal.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "shoal.componentName" (dict "root" . "component" "agent")) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shoal.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (include "shoal.componentName" (dict "root" . "component" "controller")) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shoal.trackerServiceName" -}}
{{- include "shoal.componentName" (dict "root" . "component" "tracker") -}}
{{- end -}}

{{/* The CA Secret: yours (identity.ca.existingSecret) or the one the chart generates. */}}
{{- define "shoal.caSecretName" -}}
{{- default (include "shoal.componentName" (dict "root" . "component" "ca")) .Values.identity.ca.existingSecret -}}
{{- end -}}

{{- define "shoal.caBundleName" -}}
{{- include "shoal.componentName" (dict "root" . "component" "ca-bundle") -}}
{{- end -}}

{{/* Where agents find their projected token and the CA bundle. */}}
{{- define "shoal.identityDir" -}}
/var/run/secrets/shoal
{{- end -}}

{{/* The issuer (same Service as the tracker, its issuer port), as agents dial it. */}}
{{- define "shoal.issuerAddress" -}}
{{- printf "%s.%s.svc.%s:%v" (include "shoal.trackerServiceName" .) .Release.Namespace .Values.clusterDomain .Values.controller.ports.issuer -}}
{{- end -}}

{{/* The tracker Service's cluster DNS name and port, as the agents dial it. */}}
{{- define "shoal.trackerAddress" -}}
{{- printf "%s.%s.svc.%s:%v" (include "shoal.trackerServiceName" .) .Release.Namespace .Values.clusterDomain .Values.controller.ports.tracker -}}
{{- end -}}

{{/*
An option value as the CLI reads it from SHOAL_*: lists become comma-separated, and whole numbers
are printed as integers (values arrive as float64, which would otherwise print as 2e+07).
*/}}
{{- define "shoal.optionValue" -}}
{{- if kindIs "slice" . -}}
{{- $parts := list -}}
{{- range . -}}
{{- $parts = append $parts (include "shoal.scalarValue" .) -}}
{{- end -}}
{{- join "," $parts -}}
{{- else -}}
{{- include "shoal.scalarValue" . -}}
{{- end -}}
{{- end -}}

{{- define "shoal.scalarValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* `mirror-addr` → `SHOAL_MIRROR_ADDR`, the CLI's rule (pkg/config envName). */}}
{{- define "shoal.envName" -}}
{{- printf "SHOAL_%s" (. | upper | replace "-" "_") -}}
{{- end -}}

{{/* Agent options the chart sets; agent.config overrides any of them. */}}
{{- define "shoal.agent.managedConfig" -}}
{{- $a := .Values.agent -}}
mirror-addr: {{ printf "0.0.0.0:%v" $a.ports.mirror | quote }}
metrics-addr: {{ printf "0.0.0.0:%v" $a.ports.metrics | quote }}
peer-addr: {{ printf "0.0.0.0:%v" $a.ports.peer | quote }}
tracker: {{ include "shoal.trackerAddress" . | quote }}
identity-issuer: {{ include "shoal.issuerAddress" . | quote }}
identity-token: {{ printf "%s/token" (include "shoal.identityDir" .) | quote }}
tls-ca: {{ printf "%s/ca.crt" (include "shoal.identityDir" .) | quote }}
data-dir: {{ .Values.agent.dataDir | quote }}
{{- with .Values.registries }}
upstream: {{ toJson . }}
{{- end }}
{{- if .Values.agent.registryCredentials.secretName }}
registry-credentials: /etc/shoal/registry-credentials/.dockerconfigjson
{{- end }}
{{- with $a.containerd }}
containerd-content: {{ .enabled | quote }}
{{- if .enabled }}
containerd-address: {{ .socket | quote }}
containerd-namespace: {{ .namespace | quote }}
{{- if .contentDir }}
containerd-content-dir: {{ .contentDir | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Options that need the Downward API: env entries with $(VAR) expansion, unless agent.config sets them. */}}
{{- define "shoal.agent.downwardOptions" -}}
- node-name
- peer-advertise-addr
{{- end -}}

{{/* The agent's effective configuration (chart settings, then agent.config on top) without Downward API options. */}}
{{- define "shoal.agent.config" -}}
{{- $config := merge (deepCopy (default (dict) .Values.agent.config)) (include "shoal.agent.managedConfig" . | fromYaml) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Controller flags the chart passes as arguments; controller.config overrides any of them. */}}
{{- define "shoal.controller.managedFlags" -}}
{{- $c := .Values.controller -}}
membership: kubernetes
listen: {{ printf "0.0.0.0:%v" $c.ports.tracker | quote }}
metrics-addr: {{ printf "0.0.0.0:%v" $c.ports.metrics | quote }}
namespace: "$(POD_NAMESPACE)"
agent-selector: {{ include "shoal.agent.selector" . | quote }}
lease-name: {{ default (include "shoal.componentName" (dict "root" . "component" "controller")) $c.leaderElection.leaseName | quote }}
identity: "$(POD_NAME)"
lease-duration: {{ $c.leaderElection.leaseDuration | quote }}
renew-deadline: {{ $c.leaderElection.renewDeadline | quote }}
retry-period: {{ $c.leaderElection.retryPeriod | quote }}
candidate-period: {{ $c.leaderElection.candidatePeriod | quote }}
advertise-host: "$(POD_IP)"
prefetch: {{ .Values.imagePrefetch.enabled | quote }}
{{- with .Values.registries }}
upstream: {{ toJson . }}
{{- end }}
ca-secret: {{ include "shoal.caSecretName" . | quote }}
issuer-listen: {{ printf "0.0.0.0:%v" $c.ports.issuer | quote }}
cert-lifetime: {{ .Values.identity.certificateLifetime | quote }}
token-audience: {{ .Values.identity.tokenAudience | quote }}
{{- end -}}

{{/* The controller's flags: the chart's, each replaced by controller.config's value when set there. */}}
{{- define "shoal.controller.flags" -}}
{{- $flags := include "shoal.controller.managedFlags" . | fromYaml -}}
{{- range $name, $value := (default (dict) .Values.controller.config) -}}
{{- if hasKey $flags $name -}}
{{- $_ := set $flags $name $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $flags -}}
{{- end -}}

{{/* Arguments `--name=value` (repeated for lists) of a map of options. */}}
{{- define "shoal.flagArgs" -}}
{{- range $name := keys . | sortAlpha }}
{{- $value := get $ $name }}
{{- if kindIs "slice" $value }}
{{- range $value }}
- {{ printf "--%s=%s" $name (include "shoal.scalarValue" .) | quote }}
{{- end }}
{{- else }}
- {{ printf "--%s=%s" $name (include "shoal.optionValue" $value) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
`shoal configure` options shared by the init container (as flags) and the restore-on-stop container
(as SHOAL_* variables, which its preStop command inherits: exec hooks get no $(VAR) expansion).
agent.configure.config goes on top.
*/}}
{{- define "shoal.configure.options" -}}
{{- $c := .Values.agent.configure -}}
{{- $managed := dict
  "mirror-url" (printf "http://$(HOST_IP):%v" (ternary .Values.agent.ports.mirror .Values.agent.hostPort .Values.agent.hostNetwork))
  "registries" (include "shoal.configure.registries" .)
  "runtime" $c.runtime
  "host-root" $c.hostRoot
  "containerd-config" $c.containerdConfig
  "hosts-dir" $c.hostsDir
  "crio-registries-dir" $c.crioRegistriesDir
  "state-dir" $c.stateDir
-}}
{{- if $c.strict }}{{ $_ := set $managed "strict" true }}{{ end -}}
{{- /* With the Events permission, problems become Warning Events on the agent's own Pod. */ -}}
{{- if .Values.agent.rbac.createEvents }}{{ $_ := set $managed "event-pod" "$(POD_NAMESPACE)/$(POD_NAME)" }}{{ end -}}
{{- toYaml (merge (deepCopy (default (dict) $c.config)) $managed) -}}
{{- end -}}

{{/* `shoal configure --registries`: the same entries (REGISTRY=URL sets containerd's fallback server); none → _default. */}}
{{- define "shoal.configure.registries" -}}
{{- default "_default" (join "," .Values.registries) -}}
{{- end -}}

{{/* Volume mounts of the node's runtime configuration (under the host root) and configure's state dir. */}}
{{- define "shoal.configure.volumeMounts" -}}
{{- $root := .Values.agent.configure.hostRoot -}}
{{- range $i, $path := .Values.agent.configure.hostPaths }}
- name: {{ printf "runtime-config-%d" $i }}
  mountPath: {{ printf "%s%s" (trimSuffix "/" $root) $path | quote }}
{{- end }}
- name: configure-state
  mountPath: {{ printf "%s%s" (trimSuffix "/" $root) .Values.agent.configure.stateDir | quote }}
{{- end -}}
