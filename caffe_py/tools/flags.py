"""gflags-style command-line flags as Caffe's tools take them.

`-flag value`, `-flag=value`, `--flag value`, `--flag=value`; boolean flags
also as bare `-flag` or `-noflag`. Positional arguments are kept in order.
"""


class FlagError(ValueError):
    """A flag that is unknown, lacks a value, or has a value of the wrong kind."""


def wants_help(argv):
    """Whether argv asks for help: -h, -help or -helpfull, with one or two dashes."""
    return any(arg.lstrip('-') in ('h', 'help', 'helpfull') for arg in argv if arg.startswith('-'))


def parse(argv, spec):
    """Parse `argv` by `spec` {name: default}; the type of each default (bool/int/float/str) is the flag's.

    Returns (flags dict, positional list).
    """
    flags = dict(spec)
    positional = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith('-') or arg == '-' or _is_number(arg):
            positional.append(arg)
            continue
        name = arg.lstrip('-')
        value = None
        if '=' in name:
            name, value = name.split('=', 1)
        if name not in spec:
            if name.startswith('no') and isinstance(spec.get(name[2:]), bool) and value is None:
                flags[name[2:]] = False
                continue
            raise FlagError('unknown command line flag \'%s\' (known: %s)'
                            % (name, ', '.join('-' + k for k in sorted(spec))))
        kind = type(spec[name])
        if value is None:
            if kind is bool and (i >= len(argv) or argv[i].lower() not in ('true', 'false', '1', '0')):
                flags[name] = True
                continue
            if i >= len(argv):
                raise FlagError("flag '-%s' is missing its value" % name)
            value = argv[i]
            i += 1
        flags[name] = _convert(name, value, kind)
    return flags, positional


def _convert(name, value, kind):
    try:
        if kind is bool:
            if value.lower() in ('true', '1', 'yes'):
                return True
            if value.lower() in ('false', '0', 'no'):
                return False
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise FlagError("flag '-%s' expects a %s, got '%s'" % (name, kind.__name__, value)) from None


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False
