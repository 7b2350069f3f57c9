"""``zoo models``: browse and check the model zoo.

Three actions, as argparse subcommands; a first word that is not an action is a pattern for
``list``, so ``zoo models '*mlp'`` lists::

    zoo models [list] [PATTERN]   table: name, source, parameters on MNIST, description
    zoo models show NAME          hyperparameters (type, default, help), docstring, recipe snippet
    zoo models check [PATTERN]    forward + backward of every model on a tiny CPU batch

A model literally named ``show`` is listed with ``zoo models list show`` and described with
``zoo models show show``.
"""

from __future__ import annotations

import argparse
from typing import Any

from zoo.commands.table import print_table
from zoo.errors import ZooError

USAGE = """\
zoo models [PATTERN]
       zoo models list [PATTERN]
       zoo models show NAME
       zoo models check [PATTERN]"""

EXAMPLES = """\
examples:
  zoo models                 every model: name, source, parameters on MNIST, description
  zoo models '*mlp'          only the names matching an fnmatch pattern
  zoo models 'timm/resnet*'  a provider's models: patterns that start with its prefix list them
  zoo models show mlp        hyperparameters with types, defaults and help, and a recipe snippet
  zoo models check           build, forward and backward every model; exit 1 if any fails
  zoo models list show       a model literally named 'show' (list, show and check are actions)"""

PATTERN_HELP = "fnmatch pattern over model names (default '*'); quote it so the shell does not expand it"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models", help="list, describe and check the models in the zoo", usage=USAGE,
        description="List the registered models (built-ins and plugins), describe one, or check them all.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # `zoo models PATTERN` means `zoo models list PATTERN` (zoo.cli inserts the default action).
    parser.set_defaults(default_action="list")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="table of the models matching PATTERN",
                                 usage="zoo models [list] [PATTERN]",
                                 description="A table of the models: name, source, parameters on MNIST, description.")
    listing.add_argument("pattern", nargs="*", metavar="PATTERN", help=PATTERN_HELP)
    listing.set_defaults(func=run_list)
    show = actions.add_parser("show", help="hyperparameters, docstring and recipe snippet of one model",
                              usage="zoo models show NAME",
                              description="One model's hyperparameters (type, default, help), docstring and a "
                              "recipe snippet with every hyperparameter at its default.")
    show.add_argument("name", nargs="*", metavar="NAME", help="a model from `zoo models`")
    show.set_defaults(func=run_show)
    check = actions.add_parser("check", help="forward and backward every model matching PATTERN; exit 1 on failure",
                               usage="zoo models check [PATTERN]",
                               description="Build every model for two data shapes, run a forward and backward "
                               "pass on a tiny CPU batch, and check logits and gradients; exit 1 if any fails.")
    check.add_argument("pattern", nargs="*", metavar="PATTERN", help=PATTERN_HELP)
    check.set_defaults(func=run_check)


def _one_pattern(args: argparse.Namespace) -> str:
    """The action's one PATTERN (default ``*``); a ZooError names extra words (an unquoted ``*``)."""
    if len(args.pattern) > 1:
        raise ZooError(f"`zoo models {args.action}` takes at most one PATTERN, got {len(args.pattern)}: "
                       f"{' '.join(args.pattern)}; quote patterns with * so the shell does not expand them")
    return args.pattern[0] if args.pattern else "*"


def _require_match(pattern: str) -> None:
    import fnmatch

    from zoo.registry import list_models, plugin_errors

    if not list_models(pattern) and not any(fnmatch.fnmatchcase(e.entry_point, pattern) for e in plugin_errors()):
        raise ZooError(f"no model matches '{pattern}'; run `zoo models` to list them all")


# Building a provider's models only to count their parameters would take minutes for a whole
# family (timm has over a thousand); past this many matches the column shows "-".
MAX_COUNTED_PROVIDED = 10


def run_list(args: argparse.Namespace) -> int:
    import fnmatch

    from zoo.model_check import count_parameters
    from zoo.providers import families, split
    from zoo.registry import get_entry, list_models, plugin_errors

    pattern = _one_pattern(args)
    _require_match(pattern)
    names = list_models(pattern)
    provided = sum(split(name) is not None for name in names)
    rows = [("NAME", "SOURCE", "PARAMS (MNIST)", "DESCRIPTION")]
    for name in names:
        entry = get_entry(name)
        try:
            counted = split(name) is None or provided <= MAX_COUNTED_PROVIDED
            params = f"{count_parameters(name):,}" if counted else "-"
        except Exception as exc:  # a plugin whose constructor fails must not hide the others
            params = f"error: {type(exc).__name__}"
        rows.append((name, entry.source, params, entry.summary))
    for family in families(pattern):  # one row per provider that the pattern does not name
        if family.load() is not None:
            rows.append((f"{family.prefix}/*", family.source, "-", family.summary()))
    for error in plugin_errors():
        if fnmatch.fnmatchcase(error.entry_point, pattern):
            rows.append((error.entry_point, error.package, "-", f"unavailable: {error.error}"))
    print_table(rows, right=(2,))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from zoo.commands.recipes import recipes_using
    from zoo.model_check import count_parameters
    from zoo.recipe_text import model_snippet
    from zoo.registry import get_entry, model_info

    if len(args.name) != 1:
        raise ZooError("`zoo models show` takes one model name, e.g. `zoo models show mlp`")
    name = args.name[0]
    entry = get_entry(name)
    print(f"{name}  ({entry.source}; {model_info(name)['builder']})")
    if entry.description:
        print(f"\n{entry.description}")
    print()
    if entry.hyperparameters:
        print("hyperparameters:")
        print_table([("  NAME", "TYPE", "DEFAULT", "HELP")] + [
            (f"  {h.name}", h.type_name, repr(h.default), h.help) for h in entry.hyperparameters.values()
        ])
    else:
        print("hyperparameters: none")
    print()
    try:
        print(f"parameters: {count_parameters(name):,} for MNIST (1x28x28, 10 classes)")
    except Exception as exc:
        print(f"parameters: cannot build for MNIST ({type(exc).__name__}: {exc})")
    print("\nrecipe snippet (every hyperparameter at its default):")
    print("\n".join(f"  {line}" for line in model_snippet(name).splitlines()))
    print()
    used = recipes_using(name)
    if used:
        print(f"shipped recipes using it: {', '.join(used)}")
    print(f"start a recipe: zoo recipe new my-{name.replace('/', '-')} --model {name}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from zoo.model_check import check_models

    pattern = _one_pattern(args)
    _require_match(pattern)
    results = check_models(pattern)
    width = max(len(name) for name, _, _ in results)
    for name, source, reason in results:
        verdict = "PASS" if reason is None else "FAIL"
        print(f"{verdict}  {name:<{width}}  {source}" + (f": {reason}" if reason else ""))
    failures = sum(reason is not None for _, _, reason in results)
    print(f"{len(results) - failures} passed, {failures} failed")
    return 1 if failures else 0
