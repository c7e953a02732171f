# The jq benchmark's filters: one run parses the generated records once and prints three short
# results: totals by group (an object updated per record), the active records rewritten and
# grouped by their tags, and a round trip of every record through its JSON text.
(reduce .[] as $r ({}; .[$r.group] += $r.score) | to_entries
 | {groups: length, best: max_by(.value)}),
(map(select(.active) | {key: (.name + "/" + .address.city), tags: (.tags | join(","))})
 | group_by(.tags) | map(length) | max),
(map(tojson | fromjson | .history | length) | add)
