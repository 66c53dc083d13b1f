{{/* The chart's name. */}}
{{- define "kubesink.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name: the release name when it contains the chart's name
(`helm install kubesink ...` gives `kubesink`), else release-chart. */}}
{{- define "kubesink.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubesink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubesink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubesink.labels" -}}
{{ include "kubesink.selectorLabels" . }}
app.kubernetes.io/part-of: kubesink
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kubesink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubesink.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubesink.leaseName" -}}
{{- default (include "kubesink.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "kubesink.image" -}}
{{- $tag := default (printf "v%s" .Chart.AppVersion) .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Whether a KubeDL switch replaces the configuration file. */}}
{{- define "kubesink.switches" -}}
{{- if or .Values.kubedl.metaStorage .Values.kubedl.eventStorage -}}true{{- end -}}
{{- end -}}

{{/* The configuration file's text. */}}
{{- define "kubesink.config" -}}
{{- toYaml .Values.config -}}
{{- end -}}

{{/* Checks that fail the render with a message naming the value at fault. */}}
{{- define "kubesink.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: replicas without leader election would all deliver the same records" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if not (has .Values.kubedl.metaStorage (list "" "mysql")) -}}
{{- fail (printf "kubedl.metaStorage %q: must be \"\" or mysql" .Values.kubedl.metaStorage) -}}
{{- end -}}
{{- if not (has .Values.kubedl.eventStorage (list "" "mysql" "aliyun-sls")) -}}
{{- fail (printf "kubedl.eventStorage %q: must be \"\", mysql or aliyun-sls" .Values.kubedl.eventStorage) -}}
{{- end -}}
{{- if and (eq .Values.kubedl.eventStorage "aliyun-sls") (not .Values.secrets.sls.enabled) -}}
{{- fail "kubedl.eventStorage aliyun-sls reads Secret secrets.sls.name: secrets.sls.enabled must be true" -}}
{{- end -}}
{{- if and (or (eq .Values.kubedl.metaStorage "mysql") (eq .Values.kubedl.eventStorage "mysql")) (not .Values.secrets.mysql.enabled) -}}
{{- fail "kubedl.metaStorage/eventStorage mysql reads Secret secrets.mysql.name: secrets.mysql.enabled must be true" -}}
{{- end -}}
{{- if and (not (include "kubesink.switches" .)) (not .Values.config) -}}
{{- fail "config is empty and no KubeDL switch (kubedl.metaStorage, kubedl.eventStorage) is set: kubesink would have nothing to deliver to" -}}
{{- end -}}
{{- if and (le (int .Values.terminationGracePeriodSeconds) 0) true -}}
{{- fail "terminationGracePeriodSeconds must be positive" -}}
{{- end -}}
{{- end -}}
