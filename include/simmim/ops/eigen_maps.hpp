// simmim/ops/eigen_maps.hpp: row-major Eigen maps over simmim's flat buffers.
#pragma once

#include <Eigen/Core>

namespace simmim::ops {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;

/// (rows, cols) row-major view of a contiguous buffer.
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>>;
template <class T>
using VectorMap = Eigen::Map<RowVector<T>>;
template <class T>
using ConstVectorMap = Eigen::Map<const RowVector<T>>;

}  // namespace simmim::ops
