"""SSD's VideoData layer on small videos written here with OpenCV (MJPG in .avi): frames in order,
skip_frames, the data transformer, the end of the video and one-line errors."""
import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from caffe_py import TEST, Net
from caffe_py.layer import LayerError
from caffe_py.proto import caffe_pb2

FRAMES = 10


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    """A 32x24 video whose frame i is filled with 20 * i (per channel offsets 0, 2, 4)."""
    path = tmp_path_factory.mktemp('video') / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (32, 24))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(np.full((24, 32, 3), 20 * i, np.uint8) + np.array([0, 2, 4], np.uint8))
    writer.release()
    return path


def net(params, tops=('data',)):
    text = 'layer { name: "video" type: "VideoData" %s %s }' % (' '.join('top: "%s"' % t for t in tops), params)
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), TEST)


def video_net(path, batch_size, extra='', tops=('data',)):
    return net('video_data_param { video_type: VIDEO video_file: "%s" %s } data_param { batch_size: %d }'
               % (path, extra, batch_size), tops)


def frame_ids(data):
    """Which frame each item holds (the frames are flat: their mean tells them apart)."""
    return np.rint((data[:, 0].mean(axis=(1, 2))) / 20).astype(int).tolist()


def decoded(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_frames_in_order_then_the_end_of_the_video(video):
    n = video_net(video, 3, tops=('data', 'label'))
    assert n.blobs['data'].shape == (3, 3, 24, 32) and n.blobs['label'].shape == (3,)
    seen = []
    for _ in range(3):
        n.forward()
        seen.append(frame_ids(n.blobs['data'].data))
        assert (n.blobs['label'].data == 0).all()
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    np.testing.assert_array_equal(n.blobs['data'].data[2], decoded(video)[8].transpose(2, 0, 1))
    with pytest.raises(LayerError, match=r'VideoData layer "video": end of video .*clip.avi .*all its 10 frames'):
        n.forward()        # frame 9 is there, frames 10 and 11 are not


@pytest.mark.parametrize('skip, batches', [(1, [[1, 3], [5, 7], [9]]), (3, [[3, 7]])])
def test_skip_frames_drops_frames_before_each_kept_one(video, skip, batches):
    n = video_net(video, 2, 'skip_frames: %d' % skip)
    for expected in batches:
        if len(expected) < 2:
            with pytest.raises(LayerError, match='end of video'):
                n.forward()
            break
        n.forward()
        assert frame_ids(n.blobs['data'].data) == expected


def test_frames_go_through_the_forks_transformer(video):
    transform = ('transform_param { mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.5 '
                 'resize_param { resize_mode: WARP height: 16 width: 20 interp_mode: LINEAR } }')
    n = net('%s video_data_param { video_type: VIDEO video_file: "%s" } data_param { batch_size: 2 }'
            % (transform, video))
    n.forward()
    frames = decoded(video)
    for i in range(2):
        want = (cv2.resize(frames[i], (20, 16), interpolation=cv2.INTER_LINEAR).astype(np.float32)
                - np.float32([104, 117, 123])) * np.float32(0.5)
        np.testing.assert_array_equal(n.blobs['data'].data[i], want.transpose(2, 0, 1))
    n = net('transform_param { crop_size: 8 } video_data_param { video_type: VIDEO video_file: "%s" } '
            'data_param { batch_size: 1 }' % video)
    n.forward()              # TEST: the centre crop
    np.testing.assert_array_equal(n.blobs['data'].data[0], frames[0][8:16, 12:20].transpose(2, 0, 1))


def test_unreadable_sources_are_one_line_errors(video, tmp_path):
    missing = tmp_path / 'missing.avi'
    with pytest.raises(Exception, match=r'"video": video .*missing.avi \(video_data_param.video_file\) does not exist'):
        video_net(missing, 1)
    garbage = tmp_path / 'garbage.avi'
    garbage.write_bytes(b'not a video at all')
    with pytest.raises(Exception, match=r'failed to open video .*garbage.avi \(video_data_param.video_file\)'):
        video_net(garbage, 1)
    with pytest.raises(Exception, match=r'failed to open webcam video_data_param.device_id 99'):
        net('video_data_param { video_type: WEBCAM device_id: 99 } data_param { batch_size: 1 }')
    with pytest.raises(Exception, match='needs video_data_param.video_file'):
        net('video_data_param { video_type: VIDEO } data_param { batch_size: 1 }')
    with pytest.raises(Exception, match='batch_size must be positive'):
        video_net(video, 0)


def test_video_data_on_the_cupy_stand_in(video):
    import fakecupy
    from caffe_py import backend
    host = video_net(video, 2, tops=('data', 'label'))
    host.forward()
    with fakecupy.fake_gpu():
        device = video_net(video, 2, tops=('data', 'label'))
        device.forward()
        data, label = (backend.to_numpy(device.blobs[n].data) for n in ('data', 'label'))
    np.testing.assert_array_equal(data, host.blobs['data'].data)
    np.testing.assert_array_equal(label, host.blobs['label'].data)
