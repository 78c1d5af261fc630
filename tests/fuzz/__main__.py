"""python -m tests.fuzz [--cases N] [--seed S] [--workers W]: run the fuzz suite, print its table."""
import argparse
import sys
import time

from .pool import DEFAULT_MEMORY, DEFAULT_TIMEOUT, format_table, run_fuzz


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tests.fuzz', description=__doc__)
    parser.add_argument('--cases', type=int, default=2000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--memory-mb', type=int, default=DEFAULT_MEMORY >> 20,
                        help='address-space limit of each worker (RLIMIT_AS)')
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT, help='seconds per case')
    parser.add_argument('--no-corpus', action='store_true', help='generated seeds only (ignore ../shared)')
    args = parser.parse_args(argv)
    start = time.time()
    table, failures = run_fuzz(args.cases, args.seed, args.workers, memory_bytes=args.memory_mb << 20,
                               timeout=args.timeout, use_corpus=not args.no_corpus)
    print('seed %d, %d cases, %.0f s' % (args.seed, args.cases, time.time() - start))
    print(format_table(table))
    groups = {}
    for index, reader, outcome, detail in failures:
        kind = (reader, outcome, detail.split(':')[0], detail.rsplit('[', 1)[-1] if '[' in detail else '')
        groups.setdefault(kind, []).append((index, detail))
    for (reader, outcome, _, _), cases in sorted(groups.items(), key=lambda g: -len(g[1])):
        print('%d x %s (%s), e.g. case %d: %s' % (len(cases), outcome, reader, cases[0][0], cases[0][1]))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
