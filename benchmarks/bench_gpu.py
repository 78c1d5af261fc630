"""CaffeNet forward+backward images per second on the GPU, caffe-py next to PyTorch on the same card.

    python benchmarks/bench_gpu.py [--batch 256] [--iters 10] [--no-torch] [--json PATH]

caffe-py runs models/bvlc_reference_caffenet/deploy.prototxt in GPU mode with loss_weight 1 on its
output (so that backward reaches every layer and parameter, as in training; no gradient for the input
images), seeded He-scaled weights and a random batch. PyTorch, when importable, runs the same
architecture with the same weights in the same process: float32, TF32 off for matrix products and
convolutions (caffe-py's default: CUPY_TF32 unset), cudnn.benchmark on. Each
iteration is one forward and one backward pass; the device is synchronized around the timed
iterations. The outputs of the last fully connected layer are compared as a sanity check.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import caffe_py  # noqa: E402
from caffe_py import backend, formats  # noqa: E402
from caffe_py.tools.common import device_name  # noqa: E402

DEPLOY = os.path.join(ROOT, 'models', 'bvlc_reference_caffenet', 'deploy.prototxt')


def build(batch, seed=0):
    """The GPU-mode CaffeNet with a loss on its output, seeded weights and input."""
    param = formats.read_net(DEPLOY)
    param.layer[-1].loss_weight.append(1.0)
    net = caffe_py.Net(param, caffe_py.TEST)
    net.blobs['data'].reshape((batch,) + net.blobs['data'].shape[1:])
    net.reshape()
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        fan_in = blobs[0].count // blobs[0].shape[0]
        blobs[0].data[...] = rng.standard_normal(blobs[0].shape) * np.sqrt(2.0 / fan_in)
        blobs[1].data[...] = rng.uniform(-0.1, 0.1, blobs[1].shape)
    net.blobs['data'].data[...] = rng.standard_normal(net.blobs['data'].shape)
    return net


def images_per_second(step, sync, batch, iters, warmup=3):
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return batch * iters / (time.perf_counter() - start)


def torch_model(net, torch):
    """(function x -> (fc8, prob), parameters) computing the net with its weights in torch on the GPU."""
    functional = torch.nn.functional
    ops, params = [], []

    def tensor(blob):
        t = torch.from_numpy(np.array(blob.data)).cuda().requires_grad_()
        params.append(t)
        return t

    for layer in net.layers:
        lp = layer.layer_param
        blobs = net.params.get(lp.name)
        if lp.type == 'Convolution':
            cp = lp.convolution_param
            w, b = tensor(blobs[0]), tensor(blobs[1])
            ops.append((lp.name, lambda x, w=w, b=b, cp=cp: functional.conv2d(
                x, w, b, stride=cp.stride[0] if cp.stride else 1, padding=cp.pad[0] if cp.pad else 0,
                groups=cp.group)))
        elif lp.type == 'Pooling':
            pp = lp.pooling_param
            pool = functional.max_pool2d if pp.pool == pp.MAX else functional.avg_pool2d
            ops.append((lp.name, lambda x, pp=pp, pool=pool: pool(x, pp.kernel_size, pp.stride, pp.pad,
                                                                 ceil_mode=True)))
        elif lp.type == 'ReLU':
            ops.append((lp.name, functional.relu))
        elif lp.type == 'LRN':
            rp = lp.lrn_param
            ops.append((lp.name, lambda x, rp=rp: functional.local_response_norm(
                x, rp.local_size, rp.alpha, rp.beta, rp.k)))
        elif lp.type == 'InnerProduct':
            w, b = tensor(blobs[0]), tensor(blobs[1])
            ops.append((lp.name, lambda x, w=w, b=b: functional.linear(x.flatten(1), w, b)))
        elif lp.type == 'Softmax':
            ops.append((lp.name, lambda x: functional.softmax(x, 1)))
        elif lp.type not in ('Input', 'Dropout'):      # Dropout: identity in TEST
            raise ValueError('no torch equivalent for %s' % lp.type)

    def run(x):
        outputs = {}
        for name, op in ops:
            x = outputs[name] = op(x)
        return outputs['fc8'], x
    return run, params


def bench_torch(net, batch, iters):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    model, params = torch_model(net, torch)
    x = torch.from_numpy(np.array(net.blobs['data'].data)).cuda()

    def step():
        for p in params:
            p.grad = None
        _, prob = model(x)
        prob.sum().backward()
    rate = images_per_second(step, torch.cuda.synchronize, batch, iters)
    with torch.no_grad():
        fc8 = model(x)[0].cpu().numpy()
    return rate, fc8, torch.__version__


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--no-torch', action='store_true', help='time caffe-py only')
    parser.add_argument('--json', help='also write the results to this file')
    args = parser.parse_args()
    caffe_py.set_mode_gpu()
    cupy = backend.device_module()
    result = {'card': device_name(0), 'batch': args.batch,
              'iters': args.iters, 'cupy': cupy.__version__, 'tf32': int(os.environ.get('CUPY_TF32', '0')) > 0}
    net = build(args.batch)
    result['caffe_py_images_per_s'] = images_per_second(net.forward_backward, backend.synchronize,
                                                        args.batch, args.iters)
    ours = np.array(net.blobs['fc8'].data)
    if not args.no_torch:
        try:
            rate, theirs, version = bench_torch(net, args.batch, args.iters)
        except ImportError as exc:
            result['torch'] = 'not importable: %s' % exc
        else:
            scale = max(1.0, float(np.abs(theirs).max()))
            result.update(torch=version, torch_images_per_s=rate,
                          fc8_max_difference_relative=float(np.abs(ours - theirs).max()) / scale,
                          caffe_py_over_torch=result['caffe_py_images_per_s'] / rate)
    print('card: %s, batch %d, %d timed iterations (forward + backward), float32, TF32 %s'
          % (result['card'], args.batch, args.iters, 'on' if result['tf32'] else 'off'))
    print('caffe-py (CuPy %s): %8.1f images/s' % (result['cupy'], result['caffe_py_images_per_s']))
    if 'torch_images_per_s' in result:
        print('PyTorch %s:        %8.1f images/s' % (result['torch'], result['torch_images_per_s']))
        print('caffe-py / PyTorch: %.3f   (fc8 max difference %.2e of its scale)'
              % (result['caffe_py_over_torch'], result['fc8_max_difference_relative']))
    elif 'torch' in result:
        print('PyTorch: %s' % result['torch'])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
