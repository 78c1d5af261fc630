"""`caffe-py plot_log LOG OUT.png`: training loss, test outputs and learning rate against iterations.

Reads the glog lines that `caffe train` and `caffe-py train` print (the same
lines Caffe's tools/extra/parse_log.py reads). OUT's extension picks the format
(.png, .svg, .pdf: needs matplotlib, `pip install caffe-py[plot]`; .csv: the
parsed series as text, no extra needed).
"""
import os
import re

from caffe_py.tools import flags as _flags

_NUM = r'([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf))'
_ITER_LOSS = re.compile(r'\] Iteration (\d+)(?: \([^)]*\))?, loss = ' + _NUM)
_LR = re.compile(r'\] Iteration (\d+), lr = ' + _NUM)
_TESTING = re.compile(r'\] Iteration (\d+), Testing net \(#(\d+)\)')
_OUTPUT = re.compile(r'\] +(Train|Test) net output #(\d+): (\S+) = ' + _NUM)
_ITERATION = re.compile(r'\] Iteration (\d+)')

USAGE = 'usage: caffe-py plot_log LOG OUT.(png|svg|pdf|csv) [-title TEXT]'


class TrainingLog:
    """The series of one log.

    train: [(iteration, smoothed loss)]  (the `Iteration N ..., loss = x` lines)
    train_outputs: {name: [(iteration, value)]}  (`Train net output` lines: the last batch)
    lr: [(iteration, rate)]
    test: {net index: {name: [(iteration, value)]}}  (`Test net output` lines, means over test_iter)
    """

    def __init__(self):
        self.train = []
        self.train_outputs = {}
        self.lr = []
        self.test = {}

    def test_names(self):
        return [(net, name) for net in sorted(self.test) for name in self.test[net]]


def parse_log(lines):
    """Parse an iterable of log lines (or a path) into a TrainingLog."""
    if isinstance(lines, (str, os.PathLike)):
        with open(lines, errors='replace') as f:
            return parse_log(f)
    log = TrainingLog()
    iteration, test_iteration, test_net = 0, None, 0
    for line in lines:
        m = _TESTING.search(line)
        if m:
            test_iteration, test_net = int(m.group(1)), int(m.group(2))
            continue
        m = _OUTPUT.search(line)
        if m:
            kind, name, value = m.group(1), m.group(3), float(m.group(4))
            if kind == 'Test':
                at = iteration if test_iteration is None else test_iteration
                log.test.setdefault(test_net, {}).setdefault(name, []).append((at, value))
            else:
                log.train_outputs.setdefault(name, []).append((iteration, value))
            continue
        m = _LR.search(line)
        if m:
            log.lr.append((int(m.group(1)), float(m.group(2))))
            continue
        m = _ITER_LOSS.search(line)
        if m:
            iteration = int(m.group(1))
            log.train.append((iteration, float(m.group(2))))
            test_iteration = None
            continue
        m = _ITERATION.search(line)
        if m:
            iteration = int(m.group(1))
    return log


def write_csv(log, path):
    """One row per (series, iteration, value): series are train/loss, train/<output>, lr, test<k>/<output>."""
    rows = [('train/loss', i, v) for i, v in log.train]
    rows += [('train/' + name, i, v) for name, pts in log.train_outputs.items() for i, v in pts]
    rows += [('lr', i, v) for i, v in log.lr]
    rows += [('test%d/%s' % (net, name), i, v) for net, name in log.test_names()
             for i, v in log.test[net][name]]
    with open(path, 'w') as f:
        f.write('series,iteration,value\n')
        f.writelines('%s,%d,%r\n' % row for row in rows)


def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError('plotting needs matplotlib: pip install "caffe-py[plot]" '
                           '(or write OUT.csv for the parsed series)') from None
    return plt


def _is_loss(name):
    return 'loss' in name.lower()


def plot(log, path, title=None):
    """Draw loss (train and test), the other test outputs and the learning rate in three panels."""
    plt = _pyplot()
    fig, (ax_loss, ax_test, ax_lr) = plt.subplots(3, 1, figsize=(8, 9), sharex=True,
                                                  gridspec_kw=dict(height_ratios=[3, 3, 1.4]))
    if log.train:
        ax_loss.plot(*zip(*log.train), lw=1, color='tab:blue', label='train loss (as displayed)')
    colors = ['tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive',
              'tab:cyan']
    for k, (net, name) in enumerate(log.test_names()):
        pts = log.test[net][name]
        label = 'test%s %s' % ('' if len(log.test) == 1 else ' #%d' % net, name)
        ax = ax_loss if _is_loss(name) else ax_test
        ax.plot(*zip(*pts), marker='o', ms=3, lw=1.2, label=label, color=colors[k % len(colors)])
    ax_loss.set_ylabel('loss')
    ax_test.set_ylabel('test outputs')
    for ax in (ax_loss, ax_test):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if log.lr:
        ax_lr.step(*zip(*log.lr), where='post', color='tab:gray')
        rates = [v for _, v in log.lr if v > 0]
        if rates and max(rates) / min(rates) > 20:
            ax_lr.set_yscale('log')
    ax_lr.set_ylabel('learning rate')
    ax_lr.set_xlabel('iteration')
    ax_lr.grid(alpha=0.3)
    ax_loss.set_title(title or 'training log')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(name, argv):
    if any(a in ('-h', '-help', '--help') for a in argv):
        print(USAGE + '\n' + __doc__.split('\n\n', 1)[1].strip())
        return 0
    flags, args = _flags.parse(argv, {'title': ''})
    if len(args) != 2:
        print(USAGE)
        return 1
    src, out = args
    log = parse_log(src)
    if not log.train and not log.test:
        raise ValueError('%s: no training iterations or test outputs found (is it a caffe train log?)' % src)
    if out.lower().endswith('.csv'):
        write_csv(log, out)
    else:
        plot(log, out, flags['title'] or os.path.basename(src))
    print('%s: %d training points, %d tests, %d rate changes -> %s' % (
        src, len(log.train), max((len(p) for n in log.test.values() for p in n.values()), default=0),
        len({v for _, v in log.lr}), out))
    return 0
