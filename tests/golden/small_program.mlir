module @small_program attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<2x3xf32>, %arg1: tensor<3x4xf32>) -> (tensor<2x4xf32>, tensor<2xbf16>) {
    %0 = "stablehlo.dot_general"(%arg0, %arg1) <{dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [0]>, precision_config = [#stablehlo<precision DEFAULT>, #stablehlo<precision DEFAULT>]}> : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32> loc("mlp")
    %1 = "stablehlo.constant"() <{value = dense<0x3F800000> : tensor<2x4xf32>}> : () -> tensor<2x4xf32> loc("mlp")
    %2 = "stablehlo.add"(%0, %1) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32> loc("mlp")
    %3 = "stablehlo.tanh"(%2) : (tensor<2x4xf32>) -> tensor<2x4xf32> loc("mlp")
    %5 = "stablehlo.constant"() <{value = dense<0x00000000> : tensor<f32>}> : () -> tensor<f32>
    %4 = "stablehlo.reduce"(%3, %5) <{dimensions = array<i64: 0>}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %r = "stablehlo.add"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%r) : (tensor<f32>) -> ()
    }) : (tensor<2x4xf32>, tensor<f32>) -> tensor<4xf32>
    %6 = "stablehlo.constant"() <{value = dense<0> : tensor<i32>}> : () -> tensor<i32>
    %7 = "stablehlo.broadcast_in_dim"(%4) <{broadcast_dimensions = array<i64: 1>}> : (tensor<4xf32>) -> tensor<2x4xf32>
    %8:3 = "stablehlo.while"(%6, %3, %7) ({
    ^bb0(%9: tensor<i32>, %10: tensor<2x4xf32>, %11: tensor<2x4xf32>):
      %12 = "stablehlo.constant"() <{value = dense<2> : tensor<i32>}> : () -> tensor<i32>
      %13 = "stablehlo.compare"(%9, %12) <{comparison_direction = #stablehlo<comparison_direction LT>, compare_type = #stablehlo<comparison_type SIGNED>}> : (tensor<i32>, tensor<i32>) -> tensor<i1>
      "stablehlo.return"(%13) : (tensor<i1>) -> ()
    }, {
    ^bb0(%14: tensor<i32>, %15: tensor<2x4xf32>, %16: tensor<2x4xf32>):
      %17 = "stablehlo.constant"() <{value = dense<1> : tensor<i32>}> : () -> tensor<i32>
      %18 = "stablehlo.add"(%14, %17) : (tensor<i32>, tensor<i32>) -> tensor<i32>
      %19 = "stablehlo.add"(%15, %16) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
      "stablehlo.return"(%18, %19, %16) : (tensor<i32>, tensor<2x4xf32>, tensor<2x4xf32>) -> ()
    }) : (tensor<i32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<i32>, tensor<2x4xf32>, tensor<2x4xf32>)
    %21 = "stablehlo.constant"() <{value = dense<0x00000000> : tensor<f32>}> : () -> tensor<f32>
    %20 = "stablehlo.reduce"(%8#1, %21) <{dimensions = array<i64: 1>}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %r = "stablehlo.add"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%r) : (tensor<f32>) -> ()
    }) : (tensor<2x4xf32>, tensor<f32>) -> tensor<2xf32>
    %22 = "stablehlo.convert"(%20) : (tensor<2xf32>) -> tensor<2xbf16>
    "func.return"(%8#1, %22) : (tensor<2x4xf32>, tensor<2xbf16>) -> ()
  }
}
