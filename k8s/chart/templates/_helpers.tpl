{{/* Names, labels and the operator's RBAC rules (one list, used by Role or ClusterRole). */}}
{{- define "hyperpool.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hyperpool.labels" -}}
app.kubernetes.io/name: hyperpool-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hyperpool.selectorLabels" -}}
app.kubernetes.io/name: hyperpool-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hyperpool.serviceAccountName" -}}
{{- if .Values.rbac.create -}}
{{- default (include "hyperpool.fullname" .) .Values.rbac.serviceAccountName -}}
{{- else -}}
{{- required "rbac.serviceAccountName: name a pre-existing ServiceAccount when rbac.create is false" .Values.rbac.serviceAccountName -}}
{{- end -}}
{{- end -}}

{{/* What reconciling a pool needs in a namespace it serves (k8s/README.md explains each). */}}
{{- define "hyperpool.namespacedRules" -}}
- apiGroups: [hyperflow.agh.edu.pl]
  resources: [workerpools]
  verbs: [get, list, watch, patch]
- apiGroups: [hyperflow.agh.edu.pl]
  resources: [workerpools/status]
  verbs: [get, patch]
- apiGroups: [hyperflow.agh.edu.pl]
  resources: [workerpools/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [monitoring.coreos.com]
  resources: [prometheusrules]
  verbs: [get, list, watch, create, patch]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [resourcequotas]
  verbs: [get, list]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
{{- if .Values.rbac.workerServiceAccounts }}
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
{{- end }}
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}
