# bash completion for zctr, zcd's command-line client.
# Source it (or install it as .../bash-completion/completions/zctr): it
# completes commands, subcommands, flags, signal and runtime names, paths
# where a path goes, and container ids, which it asks the daemon the command
# line names for (`zctr containers list --ids`, one second at most, quietly).

_zctr_global_flags="--address --events-address --json --timeout --node --on --client-cert --help"

# The flags a command (and subcommand) takes besides the global ones;
# the same lists as `zctr COMMAND [SUB] --help`.
_zctr_flags()
{
    case "$1 $2" in
        "containers start") echo "--label --runtime --runtime-arg --no-pivot --stdin --stdout --stderr --attach --log --log-max-bytes --log-max-files --checkpoint --checkpoint-dir" ;;
        "containers list") echo "--ids" ;;
        "containers exec") echo "--id --pid --tty --attach --cwd --env --uid --gid --stdin --stdout --stderr --log --log-max-bytes --log-max-files" ;;
        "containers kill") echo "--pid --signal --all" ;;
        "containers update") echo "--memory --cpu-shares --cpu-quota --cpu-period --pids-limit --cpuset-cpus --cpuset-mems --blkio-weight" ;;
        "containers stats" | "stats "*) echo "--watch --interval" ;;
        "containers watch") echo "--count --since-seq" ;;
        "events "*) echo "--id --since-seq --count" ;;
        "checkpoints create") echo "--exit --tcp --unix-sockets --shell --empty-ns --checkpoint-dir" ;;
        "checkpoints list" | "checkpoints delete") echo "--checkpoint-dir" ;;
        "spec "*) echo "--bundle --rootfs --terminal --memory" ;;
    esac
}

# Options whose value is the next word (global and local).
_zctr_takes_value()
{
    case "$1" in
        --address | --events-address | --timeout | --node | --on | --client-cert | \
            --label | --runtime | --runtime-arg | --stdin | --stdout | --stderr | \
            --checkpoint | --checkpoint-dir | --id | --pid | --cwd | --env | --uid | --gid | \
            --signal | --memory | --cpu-shares | --cpu-quota | --cpu-period | --pids-limit | \
            --cpuset-cpus | --cpuset-mems | --blkio-weight | --interval | --count | --since-seq | \
            --empty-ns | --bundle | --rootfs | --log | --log-max-bytes | --log-max-files) return 0 ;;
    esac
    return 1
}

# COMP_WORDS with the pieces bash splits at ':' and '=' (COMP_WORDBREAKS)
# put back together: "ipc" ":" "///run/zcd/zcd.sock" is one endpoint.
# Sets _zctr_words and _zctr_cword.
_zctr_reassemble()
{
    _zctr_words=()
    _zctr_cword=0
    local i j=-1 glue=0 w
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        w=${COMP_WORDS[i]}
        if ((j >= 0)) && { ((glue)) || [[ $w == ":" || $w == "=" ]]; }; then
            _zctr_words[j]+=$w
            [[ $w == ":" || $w == "=" ]] && glue=1 || glue=0
        else
            _zctr_words[++j]=$w
            glue=0
        fi
        ((i == COMP_CWORD)) && _zctr_cword=$j
    done
}

# Container ids from the daemon this command line talks to.
_zctr_ids()
{
    local args=() i w
    for ((i = 1; i < _zctr_cword; i++)); do
        w=${_zctr_words[i]}
        case $w in
            --address | --events-address | --node | --on | --client-cert)
                args+=("$w" "${_zctr_words[i + 1]}") ;;
            --address=* | --events-address=* | --node=* | --on=* | --client-cert=*)
                args+=("$w") ;;
        esac
    done
    "${_zctr_words[0]}" "${args[@]}" --timeout 1000 containers list --ids 2>/dev/null
}

_zctr()
{
    COMPREPLY=()
    local _zctr_words _zctr_cword
    _zctr_reassemble
    local cur=${_zctr_words[_zctr_cword]} prev=""
    ((_zctr_cword > 0)) && prev=${_zctr_words[_zctr_cword - 1]}

    # the value of an option
    case $prev in
        --node | --client-cert | --stdin | --stdout | --stderr | --log)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --checkpoint-dir | --bundle)
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --runtime)
            COMPREPLY=($(compgen -W "runc crun" -- "$cur")); return ;;
        --signal)
            COMPREPLY=($(compgen -W "TERM KILL INT HUP QUIT USR1 USR2 STOP CONT WINCH 9 15" -- "$cur"))
            return ;;
        --id)
            COMPREPLY=($(compgen -W "$(_zctr_ids)" -- "$cur")); return ;;
    esac
    _zctr_takes_value "$prev" && return

    # the command, subcommand and operands so far
    local cmd="" sub="" operands=0 i w
    for ((i = 1; i < _zctr_cword; i++)); do
        w=${_zctr_words[i]}
        if [[ $w == "--" ]]; then
            return # exec's ARGS: the container's, not ours
        elif [[ $w == -* ]]; then
            [[ $w != *=* ]] && _zctr_takes_value "$w" && ((i++))
        elif [[ -z $cmd ]]; then
            cmd=$w
        elif [[ -z $sub && ($cmd == containers || $cmd == c || $cmd == checkpoints) ]]; then
            sub=$w
        else
            ((operands++))
        fi
    done
    [[ $cmd == c ]] && cmd=containers
    case "$cmd $sub" in
        "containers create") sub=start ;;
        "containers ls" | "checkpoints ls") sub=list ;;
        "checkpoints rm") sub=delete ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_zctr_flags "$cmd" "$sub") $_zctr_global_flags" -- "$cur"))
        return
    fi
    local commands="version state metrics stats containers events checkpoints spec help"
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return
    fi
    local subs=""
    case $cmd in
        containers) subs="start list exec kill pause resume update stats watch" ;;
        checkpoints) subs="create list delete" ;;
    esac
    if [[ -n $subs && -z $sub ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
        return
    fi
    case "$cmd $sub" in
        "state "* | "checkpoints "* | "containers kill" | "containers pause" | \
            "containers resume" | "containers update" | "containers watch")
            ((operands == 0)) && COMPREPLY=($(compgen -W "$(_zctr_ids)" -- "$cur")) ;;
        "stats "* | "containers stats")
            COMPREPLY=($(compgen -W "$(_zctr_ids)" -- "$cur")) ;;
        "containers start")
            ((operands == 1)) && COMPREPLY=($(compgen -d -- "$cur")) ;;
        "help "*)
            if ((operands == 0)); then
                COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            else
                case ${_zctr_words[_zctr_cword - 1]} in
                    containers) COMPREPLY=($(compgen -W "start list exec kill pause resume update stats watch" -- "$cur")) ;;
                    checkpoints) COMPREPLY=($(compgen -W "create list delete" -- "$cur")) ;;
                esac
            fi ;;
    esac
}

complete -F _zctr zctr
