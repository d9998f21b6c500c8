#!/bin/sh
# What CI runs on a pull request to a sealrelay config repo: validate, plan against the
# target branch, simulate the sample messages, and write the pull-request comment.
# The GitHub Actions workflow and the GitLab CI file beside it call this script and post
# the comment; run it on your machine to see what they will say.
#
#   CONFIG   the config: a file or a directory of YAML files       (default: relay.yaml)
#   BASE     the git revision to compare with                       (default: origin/main)
#   SAMPLES  a directory of sample .eml messages (skipped if absent) (default: samples)
#   COMMENT  where the comment is written                           (default: sealrelay-comment.md)
#
# Exit 0: the config is valid and planned (loosenings and changed sample decisions are in
# the comment for the reviewers; the apply of a loosening still needs --allow-downgrade).
# Exit 1: an error (invalid config, failing policy test, unreadable base); the comment
# lists every finding at its file:line:col.
set -u

CONFIG=${CONFIG:-relay.yaml}
BASE=${BASE:-origin/main}
SAMPLES=${SAMPLES:-samples}
COMMENT=${COMMENT:-sealrelay-comment.md}
MARKER="<!-- sealrelay-review -->" # the comment is found again by it, and edited in place

status=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fence() { # $1: a file, shown in a collapsed block
    printf '<details><summary>%s</summary>\n\n```text\n' "$2"
    cat "$1"
    printf '```\n\n</details>\n\n'
}

{
    echo "$MARKER"
    echo

    # 1. validate: YAML, schema, references, and the config's own policy tests
    if sealrelay validate "$CONFIG" >"$work/validate.txt" 2>&1; then
        echo "**validate:** \`$CONFIG\` is valid."
        echo
    else
        status=1
        echo "**validate:** \`$CONFIG\` has errors."
        echo
        fence "$work/validate.txt" "sealrelay validate $CONFIG"
    fi

    # 2. plan: what merging changes, each change judged (markdown; a report of the errors when invalid)
    code=0
    sealrelay plan "$CONFIG" --against "git:$BASE" --format markdown --detailed-exitcode \
        >"$work/plan.md" 2>"$work/plan.err" || code=$?
    cat "$work/plan.md"
    echo
    if [ "$code" -eq 1 ]; then
        status=1
        [ -s "$work/plan.md" ] || fence "$work/plan.err" "sealrelay plan: error"
    fi

    # 3. simulate: which sample messages would be decided differently
    if [ -d "$SAMPLES" ]; then
        code=0
        sealrelay simulate "$CONFIG" --messages "$SAMPLES" --against "git:$BASE" --detailed-exitcode \
            >"$work/simulate.txt" 2>&1 || code=$?
        case "$code" in
            0) echo "**simulate:** no sample message in \`$SAMPLES\` changes decision." ;;
            2) echo "> [!IMPORTANT]"
               echo "> **simulate:** some sample messages change decision: the DLP owners review this."
               echo
               fence "$work/simulate.txt" "sealrelay simulate --messages $SAMPLES" ;;
            *) status=1
               echo "**simulate:** failed."
               echo
               fence "$work/simulate.txt" "sealrelay simulate --messages $SAMPLES" ;;
        esac
    fi
} >"$COMMENT"

cat "$COMMENT"
exit "$status"
